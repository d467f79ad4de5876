"""Arena tab: blind A/B battles between two random tiers, votes, and the leaderboard.

The pending battle lives in gr.State as plain data (one per browser session). Both answers stream
one after another (Model A, then Model B) so neither slows the other down; the speed stats stay
hidden until the vote, since a tier's speed would give its name away.
"""

from __future__ import annotations

import html
import random
import time
from collections import OrderedDict
from types import SimpleNamespace

import gradio as gr
import plotly.graph_objects as go

from pages import Live
from pet import PetError, arena, compare
from pet.backends.base import stats_line
from pet.display import literal_html

VOTES = (("a", "👈 A is better"), ("b", "👉 B is better"), ("tie", "🤝 Tie"), ("bothbad", "👎 Both bad"))
VOTE_TEXT = {"a": "A is better", "b": "B is better", "tie": "a tie", "bothbad": "both bad",
             arena.UNPARSED: "no verdict (the reply could not be read; left out of the ratings)"}
SETS = ("Held-out examples", "My list (one per line)", "Type my own")  # arena.PROMPT_SOURCES, in this order
_rng = random.Random()  # one per process: draws must not repeat across sessions
# Per browser session, the battle its last "New battle" started (None while it is being drawn): a vote still
# holding the battle before must not land on it once the user has asked for a new one.
_latest: OrderedDict[str, str | None] = OrderedDict()
_LATEST_KEEP = 10_000


def _started(session: str | None, battle_id: str | None) -> None:
    if session:
        _latest[session] = battle_id
        _latest.move_to_end(session)
        while len(_latest) > _LATEST_KEEP:
            _latest.popitem(last=False)


def superseded(session: str | None, battle_id: str) -> bool:
    """Has this session asked for a newer battle than `battle_id`?"""
    return bool(session) and session in _latest and _latest[session] != battle_id


def _buttons(enabled: bool) -> list:
    return [gr.Button(interactive=enabled) for _ in VOTES]


def _column(text: str, error: str, done: bool) -> str:
    if error:
        return f"⚠️ **This model could not answer:** {html.escape(error)}"
    return literal_html(text) or ("…" if not done else "*(empty answer)*")


def reveal_text(b: dict) -> str:
    def line(side: str) -> str:
        s = b.get(f"stats_{side}") or {}
        tier = b[f"tier_{side}"]
        return (f"**Model {side.upper()}** was **{html.escape(tier)}** "
                f"({html.escape(b[f'ident_{side}'].get('model', ''))}) · {stats_line(s)}")
    return (f"Your vote: **{VOTE_TEXT[b['voted']]}** (you can change it until the next battle)\n\n"
            f"{line('a')}  \n{line('b')}")


def interval_text(r: dict) -> str:
    if not r["enough_votes"]:
        return f"too few votes ({r['battles']} of {arena.MIN_BATTLES} battles)"
    return f"{r['ci_low']:.0f} – {r['ci_high']:.0f}"


def table_rows(res: dict) -> list[list]:
    return [[r["rank"], r["label"], r["rating"], interval_text(r), r["battles"],
             r["wins"], r["losses"], r["ties"], res["elo"].get(r["model"])] for r in res["table"]]


HEADERS = ["rank", "tier", "rating", "95% interval", "battles", "wins", "losses", "ties", "online Elo (order-dependent)"]


def heatmap(res: dict) -> go.Figure:
    wr = res["winrate"]
    z = [[None if v is None else round(100 * v, 1) for v in row] for row in wr["matrix"]]
    text = [[("" if v is None else f"{v:.0f}%<br>{g} games") for v, g in zip(zrow, grow)]
            for zrow, grow in zip(z, wr["games"])]
    fig = go.Figure(go.Heatmap(z=z, x=wr["tiers"], y=wr["tiers"], text=text, texttemplate="%{text}",
                               colorscale="RdBu", zmin=0, zmax=100, colorbar={"title": "row wins %"}))
    fig.update_layout(title="Win rate of the row tier against the column tier (ties = half)", height=360,
                      xaxis_title="opponent", yaxis_title="tier", yaxis_autorange="reversed",
                      margin={"l": 60, "r": 20, "t": 50, "b": 50})
    return fig


def ratings_chart(res: dict) -> go.Figure:
    t = [r for r in res["table"] if r["enough_votes"]]  # a zero-width bar after one vote would mislead
    fig = go.Figure(go.Scatter(
        x=[r["label"] for r in t], y=[r["rating"] for r in t], mode="markers",
        marker={"size": 10},
        error_y={"type": "data", "symmetric": False, "array": [r["ci_high"] - r["rating"] for r in t],
                 "arrayminus": [r["rating"] - r["ci_low"] for r in t]}))
    fig.update_layout(title="Bradley-Terry rating with 95% bootstrap interval", height=360,
                      yaxis_title="rating (1000 = average)", margin={"l": 60, "r": 20, "t": 50, "b": 50})
    return fig


def summary(human: dict, judge: dict, agreement: list[dict]) -> str:
    lines = []
    pb = human["position_bias"]
    if pb["decisive"]:
        lines.append(f"**Position bias:** the left answer (Model A) won {pb['rate']:.0%} of {pb['decisive']} decisive "
                     f"human votes (95% interval {pb['ci_low']:.0%} – {pb['ci_high']:.0%}; 50% = no bias).")
    nxt = human["next_pair"]
    if nxt:
        why = ("they have never met" if nxt["p_a_above"] is None
               else f"their order is the least certain: P({nxt['tier_a']} above) = {nxt['p_a_above']:.0%}")
        lines.append(f"**Most useful next battle:** {html.escape(nxt['tier_a'])} vs {html.escape(nxt['tier_b'])} "
                     f"({why}); ⚔️ New battle draws this pair, on random sides.")
    lines.append(f"**Human votes:** {human['votes']} · **auto-judge votes:** {judge['votes']} (rated separately below).")
    for a in agreement:
        rate = "no shared battles yet" if a["agreement"] is None else \
            f"agrees with humans on {a['agree']} of {a['shared']} shared battles ({a['agreement']:.0%})"
        unread = f"; {a['unparsed']} unreadable repl{'y' if a['unparsed'] == 1 else 'ies'} left out" if a["unparsed"] else ""
        lines.append(f"**Judge {html.escape(a['judge'])}:** {a['votes']} votes; {rate}{unread}.")
    return "\n\n".join(lines)


def build(engine) -> dict:
    ui = SimpleNamespace(state=gr.State({}))  # the pending battle: plain data
    for section in (_battle, _leaderboard, _export):
        vars(ui).update(section(engine))
    ui.board_outs = [ui.board_md, ui.board, ui.heat, ui.chart, ui.judge_board]
    for wire in (_wire_battle, _wire_votes, _wire_board):
        wire(ui, engine)
    live = Live(ui.judge_tier, key=lambda: engine.tiers.generation,
                update=lambda value, old: gr.update(choices=engine.tiers.names()))
    return {"new": ui.new, "buttons": ui.buttons, "state": ui.state, "refresh": ui.refresh,
            "on_load": (lambda: refresh_board(engine), ui.board_outs), "live": [live]}


# --- layout ---

def _battle(engine) -> dict:
    base = engine.tiers.spec(engine.tiers.names()[0]).params  # the shared settings start from the tiers file's
    with gr.Row():
        source = gr.Radio(list(SETS), value=SETS[0], label="Prompt set", elem_id="arena-set", scale=2)
        with gr.Column(scale=3):
            plist = gr.Textbox(label="My prompts, one per line", lines=3, visible=False, elem_id="arena-list")
            prompt = gr.Textbox(label="Prompt of this battle", lines=2, elem_id="arena-prompt",
                                placeholder="New battle picks one from the prompt set (or type your own)")
    with gr.Accordion("Generation settings (shared by both models)", open=False):
        with gr.Row():
            temperature = gr.Slider(0, 2, base.temperature, step=0.05, label="Temperature",
                                    elem_id="arena-temperature")
            max_new = gr.Slider(1, 2048, base.max_new_tokens, step=1, label="Max new tokens",
                                elem_id="arena-max-new")
            seed = gr.Number(None, precision=0, label="Seed", info="blank = a new random seed each battle",
                             elem_id="arena-seed")
    new = gr.Button("⚔️ New battle", variant="primary", elem_id="arena-new")
    info = gr.Markdown("", elem_id="arena-info")
    with gr.Row(equal_height=False):
        with gr.Column():
            gr.Markdown("### Model A")
            ans_a = gr.Markdown("", elem_id="arena-answer-a", sanitize_html=True)
        with gr.Column():
            gr.Markdown("### Model B")
            ans_b = gr.Markdown("", elem_id="arena-answer-b", sanitize_html=True)
    with gr.Row():
        buttons = [gr.Button(label, interactive=False, elem_id=f"arena-vote-{key}") for key, label in VOTES]
    reveal = gr.Markdown("", elem_id="arena-reveal")
    to_train = gr.Button("➕ Send the better answer to the training set", interactive=False, elem_id="arena-train")
    return dict(source=source, plist=plist, prompt=prompt, temperature=temperature, max_new=max_new, seed=seed,
                new=new, info=info, ans_a=ans_a, ans_b=ans_b, buttons=buttons, reveal=reveal, to_train=to_train)


def _leaderboard(engine) -> dict:
    with gr.Accordion("Leaderboard", open=True):
        refresh = gr.Button("Refresh leaderboard", elem_id="arena-refresh")
        board_md = gr.Markdown("", elem_id="arena-summary")
        gr.Markdown("**Human votes**")
        board = gr.Dataframe(headers=HEADERS, value=[], interactive=False, elem_id="arena-table")
        with gr.Row():
            heat = gr.Plot(label="Win rates", elem_id="arena-heatmap")
            chart = gr.Plot(label="Ratings", elem_id="arena-chart")
        gr.Markdown("**Auto-judge votes** (kept apart from human votes)")
        judge_board = gr.Dataframe(headers=HEADERS, value=[], interactive=False, elem_id="arena-judge-table")
        with gr.Row():
            judge_tier = gr.Dropdown(engine.tiers.names(), value=engine.tiers.names()[0], label="Judge",
                                     info="a tier, or type ollama:MODEL for any model your Ollama server has",
                                     allow_custom_value=True, elem_id="arena-judge-tier", scale=2)
            judge_n = gr.Slider(1, 50, 5, step=1, label="Battles to judge", scale=2)
            judge_btn = gr.Button("Judge human-voted battles (both orders)", elem_id="arena-judge", scale=2)
        judge_md = gr.Markdown("", elem_id="arena-judge-log")
    return dict(refresh=refresh, board_md=board_md, board=board, heat=heat, chart=chart, judge_board=judge_board,
                judge_tier=judge_tier, judge_n=judge_n, judge_btn=judge_btn, judge_md=judge_md)


def _export(engine) -> dict:
    with gr.Accordion("Export votes", open=False):
        with gr.Row():
            fmt = gr.Radio(["battles", "preferences"], value="battles", label="Format",
                           info="battles: model_a/model_b/winner/conversations; preferences: prompt/chosen/rejected (DPO)")
            with_judges = gr.Checkbox(False, label="Include auto-judge votes")
            export_btn = gr.Button("Export JSONL", elem_id="arena-export")
        export_file = gr.File(label="Download", elem_id="arena-export-file", interactive=False)
    return dict(fmt=fmt, with_judges=with_judges, export_btn=export_btn, export_file=export_file)


# --- callbacks ---

def new_battle(engine, kind, text, typed, temp, mx, sd, request: gr.Request):
    """Draw the pair the leaderboard recommends, then stream both answers, A then B, into their columns."""
    idle = ["", "", "", *_buttons(False), gr.Button(interactive=False)]
    session = getattr(request, "session_hash", None)
    _started(session, None)
    avail = [r["name"] for r in engine.tier_status() if r["available"]]
    try:
        p = arena.pick_prompt(arena.PROMPT_SOURCES[SETS.index(kind)], text, typed, engine.store, _rng)
        left, right = arena.draw_next(arena.leaderboard(engine, "human"), avail, _rng)
    except PetError as e:
        gr.Warning(str(e))
        yield [{}, gr.Textbox(), f"⚠️ {html.escape(str(e))}", *idle]
        return
    b = arena.new_battle(left, right, p, temp, mx, sd, session, _rng)
    _started(session, b["id"])
    yield [b, p, "Both models are answering…", "…", "…", *_buttons(False), gr.Button(interactive=False)]
    cols: list[dict] = []
    try:
        for cols in compare.stream_columns(engine, [left, right], p, None, b["params"]):
            yield [b, gr.Textbox(), gr.Markdown(), *(_column(c["text"], c["error"], c["done"]) for c in cols),
                   *_buttons(False), gr.Button()]
    except PetError as e:
        raise gr.Error(str(e))
    arena.finish_battle(b, cols)
    note = ("Both answers are complete: which one is the better prompt?" if b["done"] else
            "⚠️ One model failed, so this battle cannot be judged: start a new battle.")
    yield [b, gr.Textbox(), note, gr.Markdown(), gr.Markdown(), *_buttons(b["done"]), gr.Button()]


def refresh_board(engine):
    human, judge = arena.leaderboard(engine, "human"), arena.leaderboard(engine, "judge")
    agreement = arena.judge_agreement(arena.votes(engine.store))
    return (summary(human, judge, agreement), table_rows(human), heatmap(human), ratings_chart(human),
            table_rows(judge))


def run_judge(engine, tier, n):
    ids = arena.unjudged(engine.store, tier, int(n))
    if not ids:
        yield f"No human-voted battle is waiting for judge **{html.escape(tier)}**."
        return
    log = []
    for k, bid in enumerate(ids, 1):
        try:
            r = arena.judge_battle(engine, bid, tier)
            log.append(f"{k}. battle `{bid[:8]}`: **{VOTE_TEXT[r['winner']]}**"
                       + (f" ({html.escape(r['note'])})" if r["note"] else ""))
        except PetError as e:
            log.append(f"{k}. battle `{bid[:8]}`: ⚠️ {html.escape(str(e))}")
            yield "\n".join(log)
            return
        yield "\n".join(log)


# --- events ---

def _wire_battle(ui, engine) -> None:
    ui.source.change(lambda s: gr.Textbox(visible=s == SETS[1]), ui.source, ui.plist, api_name=False)

    def start(kind, text, typed, temp, mx, sd, request: gr.Request):
        yield from new_battle(engine, kind, text, typed, temp, mx, sd, request)

    ui.new.click(start, [ui.source, ui.plist, ui.prompt, ui.temperature, ui.max_new, ui.seed],
                 [ui.state, ui.prompt, ui.info, ui.ans_a, ui.ans_b, *ui.buttons, ui.to_train], api_name="arena_battle",
                 concurrency_id="arena", concurrency_limit=2)  # its own queue lane: a busy chat never blocks it
    ui.new.click(lambda: "", None, ui.reveal, api_name=False, show_progress="hidden")


def _wire_votes(ui, engine) -> None:
    def vote(winner: str):
        def cast(b, request: gr.Request):
            if not b or not b.get("done"):
                raise gr.Error("Start a battle and wait for both answers before voting.")
            here = getattr(request, "session_hash", None)
            if superseded(here, b["id"]):
                raise gr.Error("A new battle has started, so this vote was not counted: vote on the new battle "
                               "once both answers are in.")
            session = here or b.get("session")
            try:
                arena.record_vote(engine.store, b, winner, session=session)
            except PetError as e:
                raise gr.Error(str(e))
            b = dict(b, voted=winner)
            return b, reveal_text(b), gr.Button(interactive=winner in ("a", "b"))
        return cast

    def send_better(b):
        if not b or not b.get("voted"):
            raise gr.Error("Vote first: the better answer is the one you chose.")
        try:
            engine.settings.check_writable("add an answer to the training set")
            version = arena.send_to_training(engine.store, b["id"])
        except PetError as e:
            raise gr.Error(str(e))
        gr.Info(f"Added to the training set as dataset version {version}.")
        return gr.Button(interactive=False)

    for (key, _), btn in zip(VOTES, ui.buttons):
        btn.click(vote(key), ui.state, [ui.state, ui.reveal, ui.to_train], api_name=False).then(
            lambda: refresh_board(engine), None, ui.board_outs, api_name=False)
    ui.to_train.click(send_better, ui.state, ui.to_train, api_name=False)


def _wire_board(ui, engine) -> None:
    def judge(tier, n):
        yield from run_judge(engine, tier, n)

    def do_export(kind, judges):
        rows = arena.votes(engine.store, None if judges else "human")
        if not rows:
            raise gr.Error("No votes to export yet.")
        out = engine.settings.export_path(f"arena_{kind}_{time.strftime('%Y%m%d-%H%M%S')}.jsonl")
        try:
            n = arena.export(rows, kind, out)
        except PetError as e:
            raise gr.Error(str(e))
        gr.Info(f"Exported {n} line(s).")
        return str(out)

    def board():
        return refresh_board(engine)

    ui.refresh.click(board, None, ui.board_outs, api_name="arena_leaderboard")
    ui.judge_btn.click(judge, [ui.judge_tier, ui.judge_n], ui.judge_md, api_name=False, concurrency_id="judge",
                       concurrency_limit=1).then(board, None, ui.board_outs, api_name=False)
    ui.export_btn.click(do_export, [ui.fmt, ui.with_judges], ui.export_file, api_name=False)
