"""Train tab: fine-tune a LoRA on a dataset version in the background, watch it live, use the result.

The job talks through its run folder (pet/train/jobs.py): a timer reads it every second, so a reload,
a second tab or an app restart finds the running job again.
"""

from __future__ import annotations

import html
from dataclasses import fields
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from pages import Live, export_panel
from pet import PetError, dataview
from pet.datastore import DatasetStore
from pet.train import jobs
from pet.train.trainer import TrainConfig

HYPER = ("lora_r", "lora_alpha", "lora_dropout", "target_modules", "lr", "epochs", "max_steps", "batch_size",
         "grad_accum", "max_seq_len", "seed")
_HELP = {f.name: f.metadata["help"] for f in fields(TrainConfig)}


def trainable_tiers(engine) -> list[str]:
    return [n for n in engine.tiers.names() if engine.tiers.spec(n).backend in ("llamacpp", "hf")]


def dataset_choices(engine) -> list[tuple[str, str]]:
    """The saved dataset versions, newest first (the store seeds version 1 with the shipped examples on
    first use); none when the store cannot be read, which the Data tab reports."""
    try:
        vs = DatasetStore(engine.store).versions()
    except PetError:
        return []
    return [(f"v{v['id']}{' · ' + v['name'] if v.get('name') else ''} · {v['examples']} examples"
             f"{' · ' + v['note'] if v.get('note') else ''}", str(v["id"])) for v in vs]


def latest_version(engine) -> int | None:
    try:
        return DatasetStore(engine.store).latest()
    except PetError:
        return None


def load_examples(engine, version: str | None) -> list[dict]:
    if not version:
        raise PetError("choose a dataset version to train on (the Data tab saves them)")
    return DatasetStore(engine.store).get(int(version))


def make_config(tier, values: dict) -> TrainConfig:
    kw = {k: v for k, v in values.items() if v is not None}
    bad = []
    for k in ("max_steps", "lora_r", "lora_alpha", "batch_size", "grad_accum", "max_seq_len", "seed"):
        if kw.get(k) is not None:
            try:
                kw[k] = int(kw[k])
            except (ValueError, OverflowError):  # inf or nan typed into a number box
                bad.append(f"{k}: must be a whole number, got {kw[k]!r}")
    if bad:
        raise PetError("bad training settings:\n" + "\n".join(f"  - {x}" for x in bad))
    kw["max_steps"] = kw.get("max_steps") or None
    return TrainConfig(tier=tier, **kw).check()


def fmt_s(s) -> str:
    if s is None:
        return "?"
    s = int(s)
    return f"{s // 3600}h {s % 3600 // 60}m" if s >= 3600 else f"{s // 60}m {s % 60:02d}s"


def progress_html(run: dict | None) -> str:
    if not run:
        return '<div id="train-progress-box" class="pet-progress"><span>No training job yet.</span></div>'
    total = run.get("total_steps") or 0
    step = run.get("step") or 0
    state = run["state"]
    phase = run.get("phase") if state in jobs.LIVE else None
    # The bar follows the current phase (an evaluation has its own progress), else the steps.
    done, of = (run.get("phase_done"), run.get("phase_total")) if phase != "training" else (step, total)
    pct = 100.0 * (done or 0) / of if of else (100.0 * step / total if total else 0.0)
    parts = [f"run {run['id']}", state]
    if phase:
        parts.append(phase + (f" {done}/{of}" if of and phase != "training" else "")
                     + (f" ({run['phase_detail']})" if run.get("phase_detail") else ""))
    parts.append(f"step {step}/{total or '?'}")
    if state in jobs.LIVE:
        parts.append(f"ETA {fmt_s(run.get('eta_s'))}" if run.get("eta_s") is not None
                     else "ETA: measuring speed")
    if run.get("tokens_per_s"):
        parts.append(f"{run['tokens_per_s']:.0f} tokens/s")
    final = run.get("final") or {}
    if final.get("eval_loss_after") is not None:
        parts.append(f"held-out loss {final['eval_loss_before']:.3f} → {final['eval_loss_after']:.3f}")
    if final.get("note"):
        parts.append(final["note"])
    if state in ("failed", "interrupted"):
        why = run.get("error") or "the training process is gone (the machine or app was restarted or it was killed)"
        parts.append(f"error: {why}")
    text = html.escape(" · ".join(parts))
    color = {"failed": "#c0392b", "interrupted": "#c0392b", "cancelled": "#7f8c8d"}.get(state, "#2e86de")
    return (f'<div id="train-progress-box" class="pet-progress" data-state="{html.escape(state)}">'
            f'<div style="background:#e5e7eb;border-radius:6px;height:14px;overflow:hidden">'
            f'<div style="width:{pct:.1f}%;background:{color};height:14px"></div></div>'
            f'<span id="train-progress-text">{text}</span></div>')


def loss_figure(run: dict | None):
    import plotly.graph_objects as go

    fig = go.Figure()
    rows = (run or {}).get("metrics", [])
    tr = [r for r in rows if "loss" in r and not r.get("final")]
    ev = [r for r in rows if r.get("eval_loss") is not None and not r.get("final")]
    fig.add_trace(go.Scatter(x=[r["step"] for r in tr], y=[r["loss"] for r in tr], name="train loss",
                             mode="lines"))
    fig.add_trace(go.Scatter(x=[r["step"] for r in ev], y=[r["eval_loss"] for r in ev], name="held-out loss",
                             mode="lines+markers"))
    fig.update_layout(height=320, margin=dict(l=40, r=10, t=30, b=40), xaxis_title="step", yaxis_title="loss",
                      title=f"run {run['id']}" if run else "no run yet", legend=dict(orientation="h"))
    return fig


def history_html(engine) -> str:
    return history_table(jobs.history_rows(jobs.list_runs(engine.settings.home)))


def history_table(rows: list[list]) -> str:
    return dataview.html_table(jobs.HISTORY_COLUMNS, rows, "no runs yet")


def usable(run: dict) -> bool:
    """Offer a run's adapter as a tier only when it is one and is not just the starting point."""
    return bool(run.get("adapter")) and not (run.get("final") or {}).get("adapter_is_start")


def result_text(run: dict) -> str:
    f = run.get("final") or {}
    before, after = f.get("eval_loss_before"), f.get("eval_loss_after")
    loss = "no held-out loss" if before is None or after is None else f"held-out loss {before:.4f} → {after:.4f}"
    head = f"**Run {run['id']} {run['state']}** after {f.get('steps')} steps · {loss}."
    lines = [head]
    if f.get("note"):
        lines.append(f"⚠️ {f['note']}.")
    if run.get("adapter"):
        lines.append(f"Adapter: `{run['adapter']}`")
    if run.get("model"):
        lines.append(f"Full model: `{run['model']}`" + (f" · GGUF for llama.cpp: `{run['gguf']}`" if run.get("gguf") else ""))
        if not run.get("adapter"):
            lines.append(f"Only adapters ship as tiers here: extract one with "
                         f"`python -m pet export lora --run {run['id']} --rank 32`.")
    return "  \n".join(lines)


def estimate_md(engine, tier, version, values) -> str:
    try:
        cfg = make_config(tier, values)
        examples = load_examples(engine, version)
        spec = engine.tiers.spec(tier)
    except (PetError, ValueError, TypeError) as e:
        return f"⚠️ {e}"
    est = jobs.estimate(examples, cfg, system_chars=len(spec.system_prompt),
                        measured=jobs.measured_run(engine.settings.home, tier))
    rate = f"{est['tokens_per_s']:.0f} tokens/s ({'this tier’s last run' if est['measured'] else 'typical for Gemma 3 270M on 2 CPU cores'})"
    return (f"**Estimate:** {est['train_examples']} training / {est['heldout_examples']} held-out examples, "
            f"{est['steps']} steps, ~{est['tokens']:,} tokens at {rate}: about **{fmt_s(est['seconds'])}**, "
            f"peak memory about **{est['memory_gb']:.1f} GB** ({est['precision']}).")


def build(engine) -> dict:
    tiers = trainable_tiers(engine)
    default_tier = "enhanced" if "enhanced" in tiers else (tiers[0] if tiers else None)
    choices = dataset_choices(engine)
    ui = SimpleNamespace(watched=gr.State(None),  # run id this page shows; None = the running job, else the latest
                         shown=gr.State(None))  # the history rows on screen: the table is resent only when they change
    newest = choices[0][1] if choices else None
    # The layout sections, top to bottom (each returns its components by name), then the wiring.
    vars(ui).update(**_source(tiers, default_tier, choices), **_hyperparameters(),
                    **_controls(engine, default_tier, newest), **_result(engine, ui.watched), **_history(engine))
    export_panel.tier_panel(engine, tiers)
    _wire_estimate(ui, engine)
    ui.timer = _wire_jobs(ui, engine)
    _wire_result(ui, engine)
    lives = [Live(ui.tier, key=lambda: engine.tiers.generation,
                  update=lambda value, old: gr.update(choices=trainable_tiers(engine))),
             Live(ui.version, key=lambda: latest_version(engine), update=partial(versions_update, engine))]
    return {"tier": ui.tier, "version": ui.version, "start": ui.start, "cancel": ui.cancel, "resume": ui.resume,
            "progress": ui.progress, "plot": ui.plot, "timer": ui.timer, "live": lives}


# --- layout: one function per section; each returns its components by name ---

def _source(tiers: list[str], default_tier: str | None, choices: list[tuple[str, str]]) -> dict:
    gr.Markdown("Fine-tune a LoRA adapter on a dataset version. Training runs in the background: you can "
                "reload the page or close it, and it will be here when you come back.")
    with gr.Row():
        tier = gr.Dropdown(tiers, value=default_tier, label="Base tier (its model, chat template and system prompt)",
                           elem_id="train-tier")
        # Follows the saved versions live (newest first, the newest selected unless you chose an older one).
        version = gr.Dropdown(choices, value=choices[0][1] if choices else None, label="Dataset version",
                              elem_id="train-data")
    return dict(tier=tier, version=version)


def _hyperparameters() -> dict:
    d = TrainConfig()
    with gr.Accordion("Hyperparameters", open=False):
        with gr.Row():
            lora_r = gr.Number(d.lora_r, label="LoRA r", info=_HELP["lora_r"], precision=0, elem_id="train-r")
            lora_alpha = gr.Number(d.lora_alpha, label="LoRA alpha", info=_HELP["lora_alpha"], precision=0)
            lora_dropout = gr.Number(d.lora_dropout, label="LoRA dropout", info=_HELP["lora_dropout"])
            target_modules = gr.Textbox(d.target_modules, label="Target modules", info=_HELP["target_modules"])
        with gr.Row():
            lr = gr.Number(d.peak_lr(), label="Learning rate", info=_HELP["lr"])
            epochs = gr.Number(d.epochs, label="Epochs", info=_HELP["epochs"])
            max_steps = gr.Number(0, label="Max steps (0 = use epochs)", info=_HELP["max_steps"], precision=0,
                                  elem_id="train-max-steps")
            seed = gr.Number(d.seed, label="Seed", info=_HELP["seed"], precision=0)
        with gr.Row():
            batch_size = gr.Number(d.batch_size, label="Batch size", info=_HELP["batch_size"], precision=0)
            grad_accum = gr.Number(d.grad_accum, label="Gradient accumulation", info=_HELP["grad_accum"],
                                   precision=0)
            max_seq_len = gr.Number(d.max_seq_len, label="Max sequence length", info=_HELP["max_seq_len"],
                                    precision=0)
    # In HYPER's order: the callbacks zip these values with HYPER's names.
    return dict(hyper=[lora_r, lora_alpha, lora_dropout, target_modules, lr, epochs, max_steps, batch_size,
                       grad_accum, max_seq_len, seed])


def _controls(engine, default_tier: str | None, version: str | None) -> dict:
    d = TrainConfig()
    estimate = gr.Markdown(lambda: estimate_md(engine, default_tier, version, {k: getattr(d, k) for k in HYPER}),
                           elem_id="train-estimate")
    with gr.Row():
        start = gr.Button("Start training", variant="primary", elem_id="train-start")
        cancel = gr.Button("Cancel", variant="stop", elem_id="train-cancel")
        resume = gr.Button("Resume", visible=False, elem_id="train-resume")
    progress = gr.HTML(progress_html(None), elem_id="train-progress")
    plot = gr.Plot(label="Loss", elem_id="train-plot")
    with gr.Accordion("Log (last lines)", open=False):
        log = gr.Code(label="train.log", language=None, elem_id="train-log", interactive=False)
    return dict(estimate=estimate, start=start, cancel=cancel, resume=resume, progress=progress, plot=plot, log=log)


def _result(engine, watched: gr.State) -> dict:
    with gr.Group(visible=False, elem_id="train-result") as result:
        result_md = gr.Markdown(elem_id="train-result-text")
        with gr.Row() as use_row:
            make_enhanced = gr.Button("Make this the enhanced tier", elem_id="train-use-enhanced")
            new_name = gr.Textbox(label="or add it as a new tier named", placeholder="e.g. enhanced-v2", scale=1)
            add_tier = gr.Button("Add as new tier", elem_id="train-add-tier")
            export_panel.run_button(engine, watched)
    return dict(result=result, result_md=result_md, use_row=use_row, make_enhanced=make_enhanced,
                new_name=new_name, add_tier=add_tier)


def _history(engine) -> dict:
    with gr.Accordion("Run history", open=False):
        # An escaped HTML table, not a Dataframe: the Dataframe's virtual scrolling left its rows undrawn
        # after a live update until the page was scrolled or resized.
        history = gr.HTML(lambda: history_html(engine), elem_id="train-history", max_height=400)
        with gr.Row():
            pick = gr.Textbox(label="Show run (id)", elem_id="train-pick")
            show = gr.Button("Show", scale=0)
    return dict(history=history, pick=pick, show=show)


# --- events: each callback unpacks its inputs, makes one jobs call and maps the result back ---

def start_job(engine, tier, version, *vals) -> str:
    """Start a run on the chosen version's examples; returns the run id the page then watches."""
    if not tier:
        raise gr.Error("Choose a base tier: a llama.cpp or hf tier with a local model.")
    try:
        engine.settings.check_writable("start training")
        cfg = make_config(tier, dict(zip(HYPER, vals)))
        run_id = jobs.start(engine.settings.home, cfg, tiers_path=engine.settings.tiers_path,
                            examples=load_examples(engine, version), threads=engine.settings.threads)
    except jobs.JobRunning as e:
        gr.Warning(str(e))
        return e.run_id
    except (PetError, ValueError, TypeError) as e:
        raise gr.Error(str(e))
    gr.Info(f"Training started: run {run_id}")
    return run_id


def cancel_job(engine) -> str:
    """Cancel the running job (it saves its adapter first); the page then watches it."""
    cur = jobs.active(engine.settings.home)
    if not cur:
        raise gr.Error("No training job is running.")
    try:
        engine.settings.check_writable("cancel training")
        jobs.cancel(engine.settings.home, cur["id"])
    except PetError as e:
        raise gr.Error(str(e))
    gr.Info(f"Cancelling run {cur['id']}: it saves its adapter and stops within seconds.")
    return cur["id"]


def resume_job(engine, run_id) -> str:
    if not run_id:
        raise gr.Error("No run selected.")
    try:
        engine.settings.check_writable("resume training")
        jobs.resume(engine.settings.home, run_id, tiers_path=engine.settings.tiers_path,
                    threads=engine.settings.threads)
    except jobs.JobRunning as e:
        gr.Warning(str(e))
        return e.run_id
    except PetError as e:
        raise gr.Error(str(e))
    gr.Info(f"Resuming run {run_id} from its last checkpoint.")
    return run_id


def refresh(engine, run_id, shown_history) -> tuple:
    """Everything that follows the watched run: progress, loss curve, log, result and the run history."""
    run = jobs.shown_run(engine.settings.home, run_id)
    ended = bool(run and run["state"] in ("finished", "cancelled"))
    show_result = ended and bool(run["adapter"] or run["model"])
    text, offer = (result_text(run), usable(run)) if show_result else ("", False)
    tail = jobs.log_tail(Path(run["dir"])) if run else ""
    rows = jobs.history_rows(jobs.list_runs(engine.settings.home))  # live: states and steps change while runs go
    return (progress_html(run), loss_figure(run), tail, gr.update(visible=show_result), text,
            run["id"] if run else None, gr.update(visible=bool(run and run.get("resumable"))),
            gr.update(visible=offer), gr.update(value=history_table(rows)) if rows != shown_history else gr.update(),
            rows)


def use_run(engine, run_id, name=None) -> str:
    """The run's adapter on the enhanced tier, or with `name` on a new tier copying the tier it trained on."""
    if not run_id:
        raise gr.Error("No finished run selected.")
    try:
        engine.settings.check_writable("change a tier's adapter")
        target = "enhanced"
        if name:
            src = (jobs.info(jobs.run_path(engine.settings.home, run_id)).get("config") or {}).get("tier")
            target = src if src in engine.tiers.names() else "enhanced"
        spec = jobs.use_adapter(engine, run_id, target, new_name=name)
    except PetError as e:
        raise gr.Error(str(e))
    gr.Info(f"Tier {spec.name} now uses the adapter of run {run_id} (saved in PET_HOME/tiers.local.toml).")
    return history_html(engine)


def add_run_tier(engine, run_id, name) -> str:
    if not (name or "").strip():
        raise gr.Error("Type a name for the new tier first.")
    return use_run(engine, run_id, name.strip())


def versions_update(engine, value, old_latest):
    choices = dataset_choices(engine)
    # On page load, and when you had the newest selected, select the new newest; keep an older choice.
    keep = old_latest is not None and value not in (None, "", str(old_latest)) and value in [c[1] for c in choices]
    return gr.update(choices=choices, value=value if keep else (choices[0][1] if choices else None))


def _wire_estimate(ui, engine) -> None:
    inputs = [ui.tier, ui.version, *ui.hyper]

    def on_estimate(tier, version, *vals):
        return estimate_md(engine, tier, version, dict(zip(HYPER, vals)))

    for comp in inputs:
        comp.change(on_estimate, inputs, ui.estimate, api_name=False, show_progress="hidden")


def _wire_jobs(ui, engine) -> gr.Timer:
    """Start, cancel, resume and show a run, each followed by a refresh; a timer refreshes every second."""
    ins = [ui.watched, ui.shown]
    outs = [ui.progress, ui.plot, ui.log, ui.result, ui.result_md, ui.watched, ui.resume, ui.use_row, ui.history,
            ui.shown]
    now = partial(refresh, engine)
    ui.start.click(partial(start_job, engine), [ui.tier, ui.version, *ui.hyper], ui.watched,
                   api_name=False).then(now, ins, outs, api_name=False)
    ui.cancel.click(partial(cancel_job, engine), None, ui.watched, api_name=False).then(now, ins, outs, api_name=False)
    ui.resume.click(partial(resume_job, engine), ui.watched, ui.watched, api_name=False).then(now, ins, outs,
                                                                                              api_name=False)
    timer = gr.Timer(1.0)
    timer.tick(now, ins, outs, api_name=False, show_progress="hidden")
    ui.show.click(lambda rid: rid.strip() or None, ui.pick, ui.watched, api_name=False).then(now, ins, outs,
                                                                                             api_name=False)
    return timer


def _wire_result(ui, engine) -> None:
    ui.make_enhanced.click(partial(use_run, engine), ui.watched, ui.history, api_name=False)
    ui.add_tier.click(partial(add_run_tier, engine), [ui.watched, ui.new_name], ui.history, api_name=False)
