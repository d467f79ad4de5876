"""Compare tab: one prompt on several tiers, answers side by side with their timing; saved and reopenable.

The tiers stream one after another into their own columns (see pet/compare.py for why not threads):
the callback is a generator that yields every column on each chunk. The columns are slots filled in the
order the tiers were chosen, so a tier added while the app runs gets one like the others.
"""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import gradio as gr

from pages import Live
from pet import PetError, compare
from pet.backends.base import stats_line
from pet.display import literal_html

SLOTS = 8  # the most tiers one comparison shows side by side


def column_stats(col: dict) -> str:
    """The stats line under a column, and the tier's notice under it when there is one (Compare is not blind)."""
    s = col.get("stats")
    if col.get("error") or not s:
        return ""
    notice = col.get("notice")
    return f"{stats_line(s)}\n\n⚠️ {notice}" if notice else stats_line(s)


def answer_text(col: dict) -> str:
    if col.get("error"):
        return f"⚠️ **{col['tier']} could not answer:** {col['error']}"
    return literal_html(col.get("text") or "") or ("…" if not col.get("done") else "*(empty answer)*")


def saved_choices(store) -> list[tuple[str, str]]:
    out = []
    for s in compare.saved(store):
        when = dt.datetime.fromtimestamp(s["created"]).strftime("%Y-%m-%d %H:%M")
        prompt = " ".join(s["prompt"].split())
        out.append((f"{when} · {', '.join(s['tiers'])} · {prompt[:60]}", s["id"]))
    return out


def available(engine) -> list[str]:
    return [r["name"] for r in engine.tier_status() if r["available"]]


def build(engine) -> dict:
    ui = SimpleNamespace(**_inputs(engine), **_columns(), **_saved_panel())
    ui.outs = [x for group in zip(ui.cols, ui.titles, ui.answers, ui.stats) for x in group]
    _wire(ui, engine)

    def tier_choices(value, old_key):
        if old_key is None:  # page load: tick the tiers that can answer
            return gr.update(choices=engine.tiers.names(), value=available(engine))
        return gr.update(choices=engine.tiers.names())

    live = Live(ui.tiers, key=lambda: engine.tiers.generation, update=tier_choices)
    return {"prompt": ui.prompt, "tiers": ui.tiers, "run": ui.run, "answers": ui.answers, "saved": ui.saved,
            "on_load": (lambda: gr.Dropdown(choices=saved_choices(engine.store)), [ui.saved]), "live": [live]}


def _inputs(engine) -> dict:
    names = engine.tiers.names()
    base = engine.tiers.spec(names[0]).params  # the shared settings start from the tiers file's
    with gr.Row():
        with gr.Column(scale=3):
            prompt = gr.Textbox(label="Prompt", lines=3, elem_id="compare-prompt",
                                placeholder="e.g. help me write a cover letter for a data analyst job")
            system = gr.Textbox(label="System prompt (optional)", lines=2, elem_id="compare-system",
                                placeholder="blank = each tier's own system prompt")
        with gr.Column(scale=2):
            # Ticked on page load: the tiers that can answer here (an unavailable one would only show its error).
            tiers = gr.CheckboxGroup(names, value=[], label="Tiers", elem_id="compare-tiers")
            with gr.Row():
                temperature = gr.Slider(0, 2, base.temperature, step=0.05, label="Temperature",
                                        elem_id="compare-temperature")
                max_new = gr.Slider(1, 2048, base.max_new_tokens, step=1, label="Max new tokens",
                                    elem_id="compare-max-new")
                seed = gr.Number(0, precision=0, label="Seed", info="same seed, same answer (blank = random)",
                                 elem_id="compare-seed")
            with gr.Row():
                run = gr.Button("Compare", variant="primary", elem_id="compare-run")
                stop = gr.Button("Stop", elem_id="compare-stop")
    note = gr.Markdown("", elem_id="compare-note")
    return dict(base=base, prompt=prompt, system=system, tiers=tiers, temperature=temperature, max_new=max_new,
                seed=seed, run=run, stop=stop, note=note)


def _columns() -> dict:
    cols, titles, answers, stats = [], [], [], []
    with gr.Row(equal_height=False):
        for k in range(SLOTS):
            with gr.Column(min_width=260, visible=False, elem_id=f"compare-col-{k}",
                           elem_classes=["pet-compare-col"]) as col:
                titles.append(gr.Markdown("", elem_id=f"compare-title-{k}"))
                answers.append(gr.Markdown("", elem_id=f"compare-answer-{k}", sanitize_html=True))
                stats.append(gr.Markdown("", elem_id=f"compare-stats-{k}"))
            cols.append(col)
    return dict(cols=cols, titles=titles, answers=answers, stats=stats)


def _saved_panel() -> dict:
    with gr.Accordion("Saved comparisons", open=False):
        with gr.Row():
            saved = gr.Dropdown(choices=[], label="Reopen a comparison", elem_id="compare-saved", scale=4)
            reopen = gr.Button("Open", elem_id="compare-open", scale=1)
            refresh = gr.Button("Refresh list", scale=1)
    return dict(saved=saved, reopen=reopen, refresh=refresh)


def show(columns: list[dict]) -> list:
    """One update per slot: visible with its tier's name, answer and stats, or hidden."""
    out = []
    for k in range(SLOTS):
        c = columns[k] if k < len(columns) else None
        out += [gr.Column(visible=c is not None), f"### {c['tier']}" if c else "",
                answer_text(c) if c else "", column_stats(c) if c else ""]
    return out


def _wire(ui, engine) -> None:
    base = ui.base

    def run_compare(p, sys_prompt, chosen, temp, mx, sd, request: gr.Request):  # the /compare API's names
        settings = {"temperature": float(temp), "max_new_tokens": int(mx),
                    "seed": None if sd in (None, "") else int(sd)}
        system_override = sys_prompt if sys_prompt and sys_prompt.strip() else None
        cols_now: list[dict] = []
        if len(chosen or []) > SLOTS:
            raise gr.Error(f"compare at most {SLOTS} tiers at once; you chose {len(chosen)}")
        try:
            for cols_now in compare.stream_columns(engine, chosen or [], p, system_override, settings):
                yield show(cols_now) + [gr.Dropdown(), "Running…"]
            cid = compare.save(engine.store, p, system_override, compare.clean_settings(settings), cols_now,
                               getattr(request, "session_hash", None))
        except PetError as e:
            raise gr.Error(str(e))
        yield show(cols_now) + [gr.Dropdown(choices=saved_choices(engine.store), value=cid), f"Saved as `{cid[:8]}`."]

    def open_saved(cid):
        if not cid:
            raise gr.Error("Pick a saved comparison first.")
        try:
            c = compare.load(engine.store, cid)
        except PetError as e:
            raise gr.Error(str(e))
        st, chosen = c["settings"], [col["tier"] for col in c["columns"]]
        return show(c["columns"][:SLOTS]) + [c["prompt"], c["system"] or "",
                                             [t for t in chosen if t in engine.tiers.names()],
                                             st.get("temperature", base.temperature),
                                             st.get("max_new_tokens", base.max_new_tokens), st.get("seed"),
                                             f"Reopened comparison `{cid[:8]}`."]

    def saved_list():
        return gr.Dropdown(choices=saved_choices(engine.store))

    ev = ui.run.click(run_compare, [ui.prompt, ui.system, ui.tiers, ui.temperature, ui.max_new, ui.seed],
                      ui.outs + [ui.saved, ui.note], api_name="compare", concurrency_id="compare",
                      concurrency_limit=2)  # its own queue lane
    ui.stop.click(None, cancels=[ev], api_name=False)
    ui.reopen.click(open_saved, ui.saved, ui.outs + [ui.prompt, ui.system, ui.tiers, ui.temperature, ui.max_new,
                                                     ui.seed, ui.note], api_name=False)
    ui.refresh.click(saved_list, None, ui.saved, api_name=False)
    # Opening the list re-reads it, so comparisons saved in other sessions (or the CLI) show up.
    ui.saved.focus(saved_list, None, ui.saved, api_name=False, show_progress="hidden")
