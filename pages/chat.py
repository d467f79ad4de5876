"""Chat tab: talk to one tier at a time, streaming, with its system prompt and settings editable."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import gradio as gr

from pages import Live
from pet import PetError
from pet.backends.base import Stats
from pet.display import literal_html

log = logging.getLogger("pet.chat")

EXAMPLES = (
    "write a poem about autumn",
    "make this better: summarize this article",
    "help me write a cover letter for a data analyst job",
    "i need sql to find customers who havent ordered in 90 days",
    "explain kubernetes to my manager",
)

CHAT_LANE = 4  # answers generated at once (each model still serves one at a time; the rest queue)

STATE_ICON = {"ready": "🟢 ready", "idle": "⚪ not loaded yet (loads on first use)", "loading": "🟡 loading…",
              "unavailable": "🔴 unavailable"}


def status_markdown(rows: list[dict]) -> str:
    lines = ["| tier | backend | model | status |", "|---|---|---|---|"]
    for r in rows:
        state = STATE_ICON.get(r["state"], r["state"])
        if r["state"] == "unavailable" and r["reason"]:
            state += f": {r['reason']}"
        model = r["model"] + (f" + adapter `{r['adapter'].rstrip('/').split('/')[-1]}`" if r.get("adapter") else "")
        lines.append(f"| **{r['name']}** | {r['backend']} | {model} | {state} |".replace("\n", " "))
    return "\n".join(lines)


def _display(history: list[dict], stats: list[str | None]) -> list[dict]:
    """The chatbot's view: the conversation, with each answer's timing under it."""
    out, k = [], 0
    for m in history:
        if m["role"] == "assistant":
            line = stats[k] if k < len(stats) else None
            k += 1
            out.append({"role": "assistant",
                        "content": literal_html(m["content"]) + (f"\n\n<sub>{line}</sub>" if line else "")})
        else:
            out.append({"role": m["role"], "content": literal_html(m["content"])})
    return out


def build(engine) -> dict:
    names = engine.tiers.names()
    # Open on the fine-tuned tier when there is one: with a system prompt alone, the small light
    # model tends to answer the request instead of improving it.
    spec = engine.tiers.spec("enhanced" if "enhanced" in names else names[0])
    ui = SimpleNamespace(history=gr.State([]),  # plain messages, as the model sees them
                         stats=gr.State([]))  # one timing line per answer
    for section in (_conversation, _settings):
        vars(ui).update(section(engine, spec))
    _wire(ui, engine)
    live = Live(ui.tier, key=lambda: engine.tiers.generation,
                update=lambda value, old: gr.update(choices=engine.tiers.names()))
    return {"tier": ui.tier, "bot": ui.bot, "input": ui.msg, "send": ui.send, "live": [live]}


def _conversation(engine, spec) -> dict:
    with gr.Row():
        tier = gr.Dropdown(engine.tiers.names(), value=spec.name, label="Tier", elem_id="chat-tier", scale=1)
        tier_info = gr.Markdown(spec.description, elem_id="chat-tier-info")
    with gr.Accordion("Tier status", open=True):
        # A callable value is re-evaluated on every page load, so a reload shows the live status.
        status = gr.Markdown(lambda: status_markdown(engine.tier_status()), elem_id="chat-status")
    bot = gr.Chatbot(label="Conversation", elem_id="chat-bot", height=420, sanitize_html=True,
                     placeholder="Type a rough request, or click an example below: PET rewrites it as a "
                                 "well-built prompt.")
    with gr.Row():
        msg = gr.Textbox(placeholder="e.g. write a poem about autumn", show_label=False, scale=5,
                         elem_id="chat-input", lines=2)
        with gr.Column(scale=1, min_width=120):
            send = gr.Button("Send", variant="primary", elem_id="chat-send")
            stop = gr.Button("Stop", elem_id="chat-stop")
            clear = gr.Button("Clear", elem_id="chat-clear")
    last = gr.Markdown("", elem_id="chat-stats")
    gr.Markdown("**Try one:**")
    with gr.Row():
        ex_buttons = [gr.Button(e, size="sm", elem_classes=["pet-example"]) for e in EXAMPLES]
    return dict(tier=tier, tier_info=tier_info, status=status, bot=bot, msg=msg, send=send, stop=stop, clear=clear,
                last=last, ex_buttons=ex_buttons)


def _settings(engine, spec) -> dict:
    with gr.Accordion("System prompt and generation settings", open=False):
        system = gr.Textbox(spec.system_prompt, label="System prompt", lines=5, elem_id="chat-system",
                            info="blank = the tier's own (a tuned tier was trained with it and writes worse "
                                 "prompts without it)")
        with gr.Row():
            temperature = gr.Slider(0, 2, spec.params.temperature, step=0.05, label="Temperature",
                                    info="0 = always the most likely word", elem_id="chat-temperature")
            top_p = gr.Slider(0.05, 1, spec.params.top_p, step=0.05, label="Top-p")
            top_k = gr.Slider(0, 200, spec.params.top_k, step=1, label="Top-k", info="0 = off")
            max_new = gr.Slider(16, 2048, spec.params.max_new_tokens, step=16, label="Max new tokens",
                                elem_id="chat-max-new")
            seed = gr.Number(None, precision=0, label="Seed", info="blank = random", elem_id="chat-seed")
    return dict(system=system, temperature=temperature, top_p=top_p, top_k=top_k, max_new=max_new, seed=seed)


def respond(engine, tier_name, message, hist, st, sys_prompt, temp, tp, tk, mx, sd):
    """Stream one answer: yields (chatbot, history, stats, input box, status line)."""
    message = (message or "").strip()
    if not message:
        gr.Warning("Type a request first, or click one of the examples.")
        yield _display(hist, st), hist, st, message, ""
        return
    try:
        params = engine.params_for(tier_name, temperature=float(temp), top_p=float(tp), top_k=int(tk),
                                   max_new_tokens=int(mx), seed=None if sd in (None, "") else int(sd))
    except PetError as e:  # a bad setting: say which, and leave the page as it was
        gr.Warning(str(e))
        yield _display(hist, st), hist, st, message, f"⚠️ {e}"
        return
    system = sys_prompt if sys_prompt and sys_prompt.strip() else None  # blank: the tier's own, as in Compare
    asked = hist + [{"role": "user", "content": message}]
    answer, chunk, noticed = "", None, False
    yield _display(asked, st) + [{"role": "assistant", "content": "…"}], hist, st, "", "Loading the model…"
    try:
        for chunk in engine.stream(tier_name, asked, params, system=system):
            if chunk.notice and not noticed:  # e.g. the conversation was trimmed to fit the context
                gr.Warning(chunk.notice)
                noticed = True
            answer += chunk.text
            partial = asked + [{"role": "assistant", "content": answer}]
            yield _display(partial, st), partial, st, "", f"{chunk.tokens} tokens…"  # Stop keeps what came
    except PetError as e:
        yield _failed(tier_name, message, hist, st, e)
        return
    hist = asked + [{"role": "assistant", "content": answer}]
    line = f"{tier_name}: {Stats.of(chunk).line()}"
    st = st + [line]
    yield _display(hist, st), hist, st, "", line


def _failed(tier_name: str, message: str, hist: list[dict], st: list, e: PetError) -> tuple:
    """The reason goes in the chat, where it stays; the request goes back in the box to send to another
    tier; the conversation the model sees is left as it was. One log line, no traceback."""
    reason = " ".join(str(e).split())
    log.warning("chat: tier %s could not answer: %s", tier_name, reason)
    failed = {"role": "assistant", "content": f"⚠️ **{tier_name} could not answer.** {reason}"}
    shown = _display(hist, st) + [{"role": "user", "content": message}, failed]
    return shown, hist, st, message, f"⚠️ {tier_name} could not answer: pick another tier and send again."


def _wire(ui, engine) -> None:
    def answer(tier_name, message, hist, st, sys_prompt, temp, tp, tk, mx, sd):  # the /chat API's names
        yield from respond(engine, tier_name, message, hist, st, sys_prompt, temp, tp, tk, mx, sd)

    settings = [ui.system, ui.temperature, ui.top_p, ui.top_k, ui.max_new, ui.seed]
    inputs = [ui.tier, ui.msg, ui.history, ui.stats, *settings]
    outputs = [ui.bot, ui.history, ui.stats, ui.msg, ui.last]
    # One queue lane for every way of sending: past CHAT_LANE answers at once, people wait in line and
    # see their place; the other tabs have lanes of their own, so a busy chat never holds them up.
    lane = dict(concurrency_id="chat", concurrency_limit=CHAT_LANE)
    sends = [ui.send.click(answer, inputs, outputs, api_name="chat", **lane),
             ui.msg.submit(answer, inputs, outputs, api_name=False, **lane)]
    sends += [b.click(answer, [ui.tier, b, ui.history, ui.stats, *settings], outputs, api_name=False, **lane)
              for b in ui.ex_buttons]
    ui.stop.click(None, cancels=sends, api_name=False)
    ui.clear.click(lambda: ([], [], [], "", ""), None, outputs, api_name=False)

    def pick_tier(name):
        s = engine.tiers.spec(name)
        p = s.params
        return s.description, s.system_prompt, p.temperature, p.top_p, p.top_k, p.max_new_tokens

    ui.tier.change(pick_tier, ui.tier, [ui.tier_info, *settings[:5]], api_name=False)
    gr.Timer(3).tick(lambda: status_markdown(engine.tier_status()), None, ui.status, api_name=False,
                     show_progress="hidden")
