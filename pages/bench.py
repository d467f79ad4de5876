"""Benchmark tab: score any prompt instantly, run the benchmark with a progress bar, and compare stored runs.

All numbers come from pet/benchmark.py and pet/score.py; this page lays them out.
"""

from __future__ import annotations

import datetime as dt
import html
from types import SimpleNamespace

import gradio as gr
from pet import PetError, benchmark, benchplot
from pet.score import WEIGHTS

NO_JUDGE = "(no judge)"
SOURCES = ("Held-out examples", "A JSONL file of prompts")


# -- Score my prompt ----------------------------------------------------------------------------------

def score_view(prompt: str, request: str) -> tuple[str, str, str]:
    """(headline, breakdown table, suggestions) as Markdown."""
    from pet.score import score_prompt

    if not (prompt or "").strip():
        return "Type or paste a prompt to score it.", "", ""
    s = score_prompt(prompt, request if (request or "").strip() else None)
    head = f"### PET score: {s.total:.0f} / 100"
    lines = ["| part | points | because of |", "|---|---|---|"]
    for row in s.breakdown():
        pts = f"{row['points']:+.1f}" if row["max"] == 0 else f"{row['points']:.0f} / {row['max']}"
        lines.append(f"| {row['part']} | {pts} | {html.escape(row['why'])} |")
    tips = ("**To improve it:**\n\n" + "\n".join(f"- {html.escape(t)}" for t in s.suggestions)
            if s.suggestions else "**Every block is there and no penalty applies.**")
    return head, "\n".join(lines), tips


# -- results --------------------------------------------------------------------------------------------

def result_head(run: dict) -> str:
    when = dt.datetime.fromtimestamp(run["created"]).strftime("%Y-%m-%d %H:%M")
    parts = [f"**Run `{run['run_id']}`** · {when} · {run['n_prompts']} prompts ({html.escape(run['source'])}) · "
             f"judge: {html.escape(run['judge'] or 'none')} · {run['elapsed_s']:.0f} s"]
    for s in run["skipped"]:
        parts.append(f"⚠️ **{html.escape(s['tier'])} skipped:** {html.escape(s['reason'])}")
    for t in run["tiers"]:
        if t.get("unparsed"):
            parts.append(f"**{t['tier']}:** {t['unparsed']} judge verdict(s) could not be parsed (counted as unparsed, "
                         "not as ties).")
        if t.get("judge_agreement") is not None:
            parts.append(f"**{t['tier']}:** the judge gave the same verdict in both orders on "
                         f"{t['judge_agreement']:.0%} of answers.")
        if t.get("loss_note"):
            parts.append(f"**{t['tier']}:** no reference loss ({html.escape(t['loss_note'])}).")
    return "\n\n".join(parts)


def blocks_table(run: dict) -> str:
    lines = ["| tier | " + " | ".join(WEIGHTS) + " |", "|---|" + "---|" * len(WEIGHTS)]
    for t in run["tiers"]:
        b = t.get("blocks") or {}
        lines.append(f"| {t['tier']} | " + " | ".join("–" if b.get(k) is None else f"{b[k]:.2f}" for k in WEIGHTS) + " |")
    return "Average credit per block (1 = every answer has it):\n\n" + "\n".join(lines)


def comparisons_md(run: dict) -> str:
    if not run["comparisons"]:
        return "No comparisons: run at least two tiers."
    plain = []
    for c in run["comparisons"]:
        if c["metric"] in ("pet_score", "win", "similarity", "loss"):
            plain.append(f"- **{c['a']} vs {c['b']}, {benchmark.METRICS[c['metric']]}:** {c['diff']:+.3f} "
                         f"(95% interval {c['ci_low']:+.3f} to {c['ci_high']:+.3f}): "
                         + ("**the interval includes zero, so this run shows no clear difference.**"
                            if c["includes_zero"] else f"{benchmark.reading(c)}."))
    return "\n".join(plain) + "\n\n" + benchmark.comparison_table(run)


def show_run(run: dict) -> tuple:
    return (result_head(run), benchmark.tier_table(run), blocks_table(run), comparisons_md(run),
            benchplot.tier_figure(run))


def run_choices(store) -> list[tuple[str, str]]:
    out = []
    for r in benchmark.runs(store):
        when = dt.datetime.fromtimestamp(r["created"]).strftime("%Y-%m-%d %H:%M")
        tiers = ", ".join(t["tier"] for t in r["tiers"])
        out.append((f"[{r['group']}] {when} · {r['n_prompts']} prompts · {'quick · ' if r['quick'] else ''}"
                    f"judge {r['judge'] or 'none'} · {tiers}", r["run_id"]))
    return out


def runs_md(store) -> str:
    rows = benchmark.runs(store)
    if not rows:
        return "No runs yet."
    lines = ["Runs with the same **group** letter ran the same prompts with the same judge: they are comparable.",
             "", "| group | run | when | prompts | judge | PET score by tier |", "|---|---|---|---|---|---|"]
    for r in rows:
        when = dt.datetime.fromtimestamp(r["created"]).strftime("%Y-%m-%d %H:%M")
        scores = ", ".join(f"{t['tier']} {t['pet_score']:.1f}" for t in r["tiers"] if t.get("pet_score") is not None)
        lines.append(f"| {r['group']} | `{r['run_id']}` | {when} | {r['n_prompts']}{' (quick)' if r['quick'] else ''}"
                     f" | {r['judge'] or '–'} | {scores} |")
    return "\n".join(lines)


def history_figure(store, metric: str):
    return benchplot.history_figure(benchmark.history(store, metric), metric)


# -- the tab --------------------------------------------------------------------------------------------

def build(engine) -> dict:
    ui = SimpleNamespace(**_score_panel(), **_run_panel(engine.tiers.names()), **_history_panel())
    _wire_score(ui)
    _wire_runs(ui, engine)
    return {"score_prompt": ui.sc_prompt, "run": ui.run_btn,
            "on_load": (lambda: refresh_all(engine, "pet_score"), [ui.runs_table, ui.pick, ui.chart])}


def _score_panel() -> dict:
    with gr.Accordion("Score my prompt", open=True):
        gr.Markdown("Any prompt gets PET's 0-100 score at once: points for each block (WHO, WHAT, USE, HOW, "
                    "DON'T, THINK, SHOW, audience/tone, success criteria), penalties for answering instead of "
                    "improving, drifting off the request, vagueness and rambling. No model runs.")
        with gr.Row():
            sc_prompt = gr.Textbox(label="Prompt", lines=6, elem_id="bench-score-prompt", scale=3,
                                   placeholder="Paste a prompt, e.g. one the Chat tab wrote")
            with gr.Column(scale=2):
                sc_request = gr.Textbox(label="Request it was written for (optional)", lines=2,
                                        elem_id="bench-score-request",
                                        info="enables the drift penalty: the prompt must keep the request's subject")
                sc_btn = gr.Button("Score", variant="primary", elem_id="bench-score-run")
        sc_head = gr.Markdown("", elem_id="bench-score-total")
        with gr.Row():
            sc_table = gr.Markdown("", elem_id="bench-score-table")
            sc_tips = gr.Markdown("", elem_id="bench-score-tips")
    return dict(sc_prompt=sc_prompt, sc_request=sc_request, sc_btn=sc_btn, sc_head=sc_head, sc_table=sc_table,
                sc_tips=sc_tips)


def _run_panel(names: list[str]) -> dict:
    with gr.Accordion("Run the benchmark", open=True):
        with gr.Row():
            tiers = gr.CheckboxGroup(names, value=[n for n in names if n != "power"] or names, label="Tiers",
                                     elem_id="bench-tiers", scale=3)
            judge = gr.Dropdown([NO_JUDGE] + names, value=NO_JUDGE, label="Judge", allow_custom_value=True,
                                info="a tier, or type ollama:MODEL; it compares each answer with the reference, "
                                     "in both orders", elem_id="bench-judge", scale=2)
        with gr.Row():
            source = gr.Radio(list(SOURCES), value=SOURCES[0], label="Prompts", elem_id="bench-source", scale=2)
            upload = gr.File(label="JSONL: {\"prompt\", \"reference\"} or {\"messages\"} per line", visible=False,
                             file_types=[".jsonl"], elem_id="bench-file", scale=2)
            limit = gr.Number(None, precision=0, minimum=1, label="Limit (first N prompts; blank = all)",
                              elem_id="bench-limit", scale=1)
            quick = gr.Checkbox(False, label=f"Quick (fixed {benchmark.QUICK_PROMPTS} prompts: score, speed, "
                                             "hygiene; no judge)", elem_id="bench-quick", scale=1)
        run_btn = gr.Button("Run benchmark", variant="primary", elem_id="bench-run")
        head = gr.Markdown("", elem_id="bench-result")
        table = gr.Markdown("", elem_id="bench-table")
        blocks = gr.Markdown("", elem_id="bench-blocks")
        comps = gr.Markdown("", elem_id="bench-comparisons")
        tier_chart = gr.Plot(label="This run", elem_id="bench-run-chart")
    return dict(tiers=tiers, judge=judge, source=source, upload=upload, limit=limit, quick=quick, run_btn=run_btn,
                run_outs=[head, table, blocks, comps, tier_chart])


def _history_panel() -> dict:
    with gr.Accordion("Past runs", open=True):
        runs_table = gr.Markdown("", elem_id="bench-runs-table")
        with gr.Row():
            pick = gr.Dropdown(choices=[], label="Open a run", elem_id="bench-runs", scale=3)
            metric = gr.Dropdown([(v, k) for k, v in benchmark.TIER_METRICS.items()], value="pet_score",
                                 label="Metric to plot", elem_id="bench-metric", scale=2)
            refresh = gr.Button("Refresh", elem_id="bench-refresh", scale=1)
        chart = gr.Plot(label="Across runs", elem_id="bench-chart")
    return dict(runs_table=runs_table, pick=pick, metric=metric, refresh=refresh, chart=chart)


def bench_config(chosen, judge_name, src, file, lim, is_quick) -> benchmark.BenchConfig:
    """The Run form as a BenchConfig; a missing file or no tier is a gr.Error naming the fix."""
    if src == SOURCES[1] and not file:
        raise gr.Error("Upload a JSONL file of prompts, or choose the held-out examples.")
    cfg = benchmark.BenchConfig(tiers=list(chosen or []), split=file if src == SOURCES[1] else "heldout",
                                limit=None if lim in (None, "") else int(lim),
                                judge=None if judge_name in (None, "", NO_JUDGE) else judge_name,
                                quick=bool(is_quick))
    if not cfg.tiers:
        raise gr.Error("Choose at least one tier.")
    return cfg


def refresh_all(engine, m):
    return runs_md(engine.store), gr.Dropdown(choices=run_choices(engine.store)), history_figure(engine.store, m)


def _wire_score(ui) -> None:
    def do_score(p, r):  # the /score API's names
        return score_view(p, r)

    score_out = [ui.sc_head, ui.sc_table, ui.sc_tips]
    ui.sc_btn.click(do_score, [ui.sc_prompt, ui.sc_request], score_out, api_name="score")
    # Scoring is instant, so it follows the typing too.
    for box in (ui.sc_prompt, ui.sc_request):
        box.change(do_score, [ui.sc_prompt, ui.sc_request], score_out, api_name=False,
                   show_progress="hidden", trigger_mode="always_last")


def _wire_runs(ui, engine) -> None:
    def run_bench(chosen, judge_name, src, file, lim, is_quick, progress=gr.Progress()):
        cfg = bench_config(chosen, judge_name, src, file, lim, is_quick)
        try:
            run = benchmark.run(engine, cfg, progress=lambda p: progress(p.fraction, desc=p.line()))
        except PetError as e:
            raise gr.Error(str(e))
        return (*show_run(run), runs_md(engine.store),
                gr.Dropdown(choices=run_choices(engine.store), value=run["run_id"]),
                history_figure(engine.store, "pet_score"), "pet_score")

    def open_run(run_id):
        if not run_id:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        try:
            return show_run(benchmark.get_run(engine.store, run_id))
        except PetError as e:
            raise gr.Error(str(e))

    ui.source.change(lambda s: gr.File(visible=s == SOURCES[1]), ui.source, ui.upload, api_name=False)
    ui.quick.change(lambda q: gr.Dropdown(value=NO_JUDGE, interactive=not q), ui.quick, ui.judge, api_name=False)
    ui.run_btn.click(run_bench, [ui.tiers, ui.judge, ui.source, ui.upload, ui.limit, ui.quick],
                     [*ui.run_outs, ui.runs_table, ui.pick, ui.chart, ui.metric], api_name="bench")
    ui.pick.change(open_run, ui.pick, ui.run_outs, api_name=False)
    ui.metric.change(lambda m: history_figure(engine.store, m), ui.metric, ui.chart, api_name=False)
    ui.refresh.click(lambda m: refresh_all(engine, m), ui.metric, [ui.runs_table, ui.pick, ui.chart], api_name=False)
