"""Decoding that stays on the request: the loop guard, few-shot and best-of-N."""

from __future__ import annotations

import pytest

from pet import dataset
from pet.backends.base import Chunk, collect
from pet.decoding import LOOP, LoopGuard, guard_loops


def _feed_all(text: str, step: int = 7) -> bool:
    g = LoopGuard()
    return any(g.feed(text[i:i + step]) for i in range(0, len(text), step))


def test_loop_guard_catches_a_repeated_span():
    text = "You are a tutor. Explain fractions with pizza slices and " * 4
    assert _feed_all(text)


def test_loop_guard_catches_a_line_that_comes_round_again():
    lines = ["Format: a list of five questions, one per line.", "Tone: friendly."] * 3
    assert _feed_all("\n".join(lines) + "\n")


def test_loop_guard_leaves_every_curated_answer_alone():
    answers = [m["content"] for ex in dataset.read_jsonl(dataset.SHIPPED) for m in ex["messages"]
               if m["role"] == "assistant"]
    assert len(answers) >= 200
    flagged = [a[:60] for a in answers if _feed_all(a)]
    assert flagged == []


def test_loop_guard_ignores_separators_and_table_rules():
    assert not _feed_all("Columns:\n| name | score | note |\n| --- | --- | --- | --- | --- | --- |\n" + "=" * 60)


def _chunks(pieces):
    closed = []

    def gen():
        try:
            for i, p in enumerate(pieces, 1):
                yield Chunk(p, i, 0.1 * i, 0.1)
            yield Chunk("", len(pieces), 0.1 * len(pieces), 0.1, True, "stop")
        finally:
            closed.append(True)
    return gen(), closed


def test_guard_loops_ends_a_looping_stream_and_stops_the_backend():
    pieces = ["Write a poem about the sea. "] * 50
    stream, closed = _chunks(pieces)
    ans = collect(guard_loops(stream))
    assert ans.stats.finish_reason == LOOP
    assert ans.text.count("Write a poem about the sea.") == 3  # ends at the third copy, not the 50th
    assert closed == [True]


def test_guard_loops_passes_a_healthy_stream_through_unchanged():
    pieces = ["You are ", "a chef. ", "Write a recipe ", "for [dish].\n\nBlocks added: WHO, WHAT."]
    stream, closed = _chunks(pieces)
    ans = collect(guard_loops(stream))
    assert ans.text == "".join(pieces)
    assert ans.stats.finish_reason == "stop"
    assert closed == [True]


# -- retrieval few-shot --------------------------------------------------------------------------------
from pet.decoding import FewShotIndex, best_of, with_demonstrations  # noqa: E402


def _ex(request: str, answer: str, split: str = "train") -> dict:
    return {"messages": [{"role": "user", "content": request}, {"role": "assistant", "content": answer}],
            "split": split}


EXAMPLES = [
    _ex("email my landlord that the shower leaks", "You are a tenant's letter writer. ..."),
    _ex("sql query for monthly revenue by region", "You are a SQL analyst. ..."),
    _ex("poem for my grandmother's 90th birthday", "You are a poet. ..."),
    _ex("letter to my landlord about a broken heater", "held-out reference", split="heldout"),
]


def test_fewshot_finds_the_nearest_train_example_and_never_a_heldout_one(tmp_path):
    idx = FewShotIndex(EXAMPLES, "k" * 64, tmp_path)
    got = idx.nearest("need to tell my landlord the heating is broken", 1)
    assert [dataset.first_user(e) for e in got] == ["email my landlord that the shower leaks"]
    assert all(e.get("split") != "heldout" for e in idx.nearest("landlord heater letter", 3))
    cached = list(tmp_path.glob("fewshot-*.npy"))
    assert len(cached) == 1
    again = FewShotIndex(EXAMPLES, "k" * 64, tmp_path)  # a restart reads the cache
    assert again.vectors().shape == idx.vectors().shape


def test_demonstrations_go_after_the_system_prompt_nearest_last_and_within_budget():
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "request"}]
    demos = [EXAMPLES[0], EXAMPLES[1]]  # nearest first
    out = with_demonstrations(msgs, demos, budget_chars=10_000)
    assert [m["role"] for m in out] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert out[1]["content"] == EXAMPLES[1]["messages"][0]["content"]  # farther one first
    assert out[3]["content"] == EXAMPLES[0]["messages"][0]["content"]  # nearest right before the request
    assert out[-1]["content"] == "request"
    tight = with_demonstrations(msgs, demos, budget_chars=len("S") + len("request") + 80)
    assert tight == [msgs[0], *EXAMPLES[0]["messages"], msgs[1]]  # only the nearest fits


# -- best-of-N --------------------------------------------------------------------------------------
def _stream_of(text: str, reason: str = "stop"):
    words = text.split(" ")
    for i, w in enumerate(words, 1):
        yield Chunk(w + (" " if i < len(words) else ""), i, 0.01 * i, 0.01)
    yield Chunk("", len(words), 0.01 * len(words), 0.01, True, reason)


def test_best_of_returns_the_rewrite_not_the_answer_nor_the_cut_off_one():
    request = "need an email to my landlord about the broken heater"
    answer = "Dear landlord, I am writing to let you know the heater is broken. Best regards, Sam"
    cut = "You are a letter writer who helps tenants. Write an email to my landlord about the broken heater and"
    rewrite = ("You are a letter writer who helps tenants write to landlords.\n"
               "Write a polite, firm email from me, a tenant, to my landlord about the broken heater.\n"
               "Details: [date it broke], [what I have tried].\nFormat: under 150 words, a clear repair request "
               "with a date.\nAvoid: threats or legal claims.\n\nBlocks added: WHO, WHAT, USE, HOW, DON'T.")
    cands = [(answer, "stop"), (cut, "length"), (rewrite, "stop")]
    chunks = list(best_of(lambda i: _stream_of(*cands[i]), 3, request))
    ans = collect(iter(chunks))
    assert ans.text == rewrite
    assert ans.stats.finish_reason == "stop"
    assert ans.stats.tokens == sum(len(t.split(" ")) for t, _ in cands)  # every candidate's tokens count


def test_loop_guard_catches_list_items_that_come_round_under_new_numbers():
    # the light tier on a French request: the same items again and again, each time with the next number
    items = ["Résoud les lettres sans répondant (en fonctionnement)", "Ressumez le temps à 12h, et ajouter des lettres"]
    looping = "\n".join(f"{i}. {items[(i - 1) % 2]}" for i in range(1, 6)) + "\n"
    assert _feed_all(looping)
    distinct = "\n".join(f"{i}. Step {w} of the plan, written out in full" for i, w in
                         enumerate(["one", "two", "three", "four", "five"], 1)) + "\n"
    assert not _feed_all(distinct)
    form = "Models:\n" + "\n".join(f"{i}. [model and configuration, with its price]" for i in (1, 2, 3, 4)) + "\n"
    assert not _feed_all(form)  # numbered [slots] to fill in are a form, not a loop


def test_loop_guard_catches_a_list_that_counts_on_and_on():
    # the enhanced tier on "improve this prompt: explain this error", cut at 400 tokens before this sign
    counting = "Error: [error, e.g. " + " / ".join(f"{n} Forbidden" for n in range(409, 470)) + "]"
    assert _feed_all(counting)
    assert not _feed_all("Error: [error, e.g. " + " / ".join(f"{n} Forbidden" for n in range(500, 506)) + "]")
    weeks = "Plan:\n" + "".join(f"Week {n}: [goal], [reading]\n" for n in range(1, 13))
    assert not _feed_all(weeks)  # a form to fill, week by week, is not a loop


# -- drop "Avoid:" lines -------------------------------------------------------------------------------
from pet.decoding import AvoidFilter, drop_avoid, negative_line, without_dont  # noqa: E402

ANSWER = ("You are a poet who writes seasonal haiku.\n\n"
          "Write one haiku about autumn rain: 5-7-5 syllables, one image.\n"
          "Format: the haiku, then one line on the image.\n"
          "Avoid: the words \"autumn\" and \"rain\".\n\n"
          "Blocks added: WHO (poet), WHAT (one haiku), HOW (form), DON'T (the obvious words).")
FILTERED = ("You are a poet who writes seasonal haiku.\n\n"
            "Write one haiku about autumn rain: 5-7-5 syllables, one image.\n"
            "Format: the haiku, then one line on the image.\n\n"
            "Blocks added: WHO (poet), WHAT (one haiku), HOW (form).")


def _filtered(text: str, step: int) -> str:
    f = AvoidFilter()
    return "".join(f.feed(text[i:i + step]) for i in range(0, len(text), step)) + f.close()


def test_drop_avoid_leaves_out_the_negative_line_and_the_dont_block_however_it_streams():
    """A small model's "Avoid:" line most often bans the request's own subject (issue 11's judges: "avoid the
    word transformer" when explaining transformers); the setting leaves such lines out, and the Blocks line stops
    naming a DON'T block that is no longer there."""
    for step in (1, 2, 5, 13, len(ANSWER)):
        assert _filtered(ANSWER, step) == FILTERED, step


def test_drop_avoid_shows_a_kept_line_before_it_ends():
    f = AvoidFilter()
    assert f.feed("You are a poet") == "You are a poet"  # decided after a few characters: streams on
    assert f.feed(" who writes haiku") == " who writes haiku"
    assert f.feed("\nAvoid: cli") == "\n"  # held while it could be a negative line, then dropped
    assert f.feed("ches.\nBlocks added: WHO, DON'T (clichés).") == ""  # the Blocks line waits for the end
    assert f.close() == "Blocks added: WHO."


def test_drop_avoid_keeps_lines_that_only_look_negative_and_clean_answers_whole():
    assert [negative_line(x) for x in ("Avoid: jargon.", "- Do not guess.", "4. Never share it.", "Don\u2019t rush.",
                                       "Avoidance tactics: list three.", "Never-ending list: no.", "Do note the date.",
                                       "Tone: warm; avoid jargon.", "")] == [True] * 4 + [False] * 5
    # the same verb in the other languages of the curated examples, as they write it
    assert all(negative_line(x) for x in ("Evita: tecnicismos.", "Evite: jargão.", "Évite les clichés.",
                                          "Vermeide: Fachbegriffe.", "Vermijd: vakjargon.", "Evitare i cliché."))
    assert not any(negative_line(x) for x in ("Evitação de riscos: liste três.", "Eres un poeta.", "Evento: [data]."))
    clean = "You are a chef.\n1. Never-ending pasta: a menu.\n\nBlocks added: WHO, DON'T (jargon)."
    for step in (1, 4, 100):
        assert _filtered(clean, step) == clean  # nothing left out, so the Blocks line stays as written
    assert without_dont("Blocks added: WHO (chef), HOW, and DON'T (jargon, guesses).") == "Blocks added: WHO (chef), HOW."


def test_drop_avoid_shows_what_it_held_when_the_backend_fails_and_stops_the_backend_when_stopped():
    from pet.backends.base import BackendError

    def failing():
        yield Chunk("Hel", 1, 0.1, 0.1)  # held: too short to tell whether it is a negative line
        raise BackendError("the model crashed")

    got = []
    with pytest.raises(BackendError, match="crashed"):
        for ch in drop_avoid(failing()):
            got.append(ch.text)
    assert "".join(got) == "Hel"
    stream, closed = _chunks(["You are a chef.\n", "Avoid: salt.\n", "Write a menu."])
    out = drop_avoid(stream)
    assert next(out).text == "You are a chef.\n"
    out.close()  # what Stop does
    assert closed == [True]


def test_drop_avoid_is_a_tier_setting_the_engine_applies(engine, monkeypatch):
    from pet.config import ConfigError, GenParams, parse_tiers

    class Fake:
        name = "fake"

        def stream(self, messages, params):
            for k, piece in enumerate(ANSWER.split(" "), 1):
                yield Chunk(piece + " " * (k < len(ANSWER.split(" "))), k, 0.01 * k, 0.01)
            yield Chunk("", k, 0.01 * k, 0.01, True, "stop")

        def set_threads(self, n):
            pass

    tier = engine.tiers.names()[0]
    monkeypatch.setattr(engine.tiers, "backend", lambda name: Fake())
    msgs = [{"role": "user", "content": "haiku about autumn rain"}]
    on = collect(engine.stream(tier, msgs, engine.params_for(tier, drop_avoid=True, temperature=0.0)))
    off = collect(engine.stream(tier, msgs, engine.params_for(tier, drop_avoid=False, temperature=0.0)))
    assert on.text == FILTERED and off.text == ANSWER and on.stats.finish_reason == "stop"
    assert GenParams().drop_avoid is False
    spec = parse_tiers({"tiers": {"t": {"backend": "llamacpp", "model": "m.gguf", "params": {"drop_avoid": True}}}},
                       engine.settings.home, "t.toml")
    assert spec[0].params.drop_avoid is True
    with pytest.raises(ConfigError, match="drop_avoid"):
        parse_tiers({"tiers": {"t": {"backend": "llamacpp", "model": "m.gguf", "params": {"drop_avoid": "yes"}}}},
                    engine.settings.home, "t.toml")


# -- the request, word for word, as the task -------------------------------------------------------------
from pet.decoding import ROLE_TOKENS, echo_request  # noqa: E402


class _Continuer:
    """A model that writes `lines`, one per call when stopped at a newline, recording what it was asked."""

    def __init__(self, first: str, rest: str, first_reason: str = "stop"):
        self.first, self.rest, self.first_reason, self.calls = first, rest, first_reason, []

    def __call__(self, prefix, stop, max_tokens):
        self.calls.append((prefix, stop, max_tokens))
        text = self.first if not self.calls[1:] else self.rest
        words = text.split(" ")
        for k, w in enumerate(words, 1):
            yield Chunk(w + (" " if k < len(words) else ""), k, 0.1 * k, 0.1)
        yield Chunk("", len(words), 0.1 * len(words), 0.1, True, self.first_reason if not self.calls[1:] else "stop")


def test_echo_request_puts_the_request_in_after_the_role_line_and_counts_both_calls():
    model = _Continuer("You are a tenant-rights adviser.", "Details: [address].\n\nBlocks added: WHO, USE.")
    request = "need an email to my landlord, the heater's been broken for a week "
    ans = collect(echo_request(model, request, 400))
    assert ans.text == ("You are a tenant-rights adviser.\n\nneed an email to my landlord, the heater's been broken "
                        "for a week\nDetails: [address].\n\nBlocks added: WHO, USE.")
    (p1, s1, n1), (p2, s2, n2) = model.calls
    assert (p1, s1, n1) == ("", ("\n",), ROLE_TOKENS)  # the first call stops at the end of the role line
    assert p2 == "You are a tenant-rights adviser.\n\nneed an email to my landlord, the heater's been broken for a week\n"
    assert s2 == () and n2 == 400 - 5  # the second call has what the first left of the token budget
    assert ans.stats.tokens == 5 + 5 and ans.stats.finish_reason == "stop" and ans.stats.ttft_s == 0.1


def test_echo_request_goes_on_without_an_echo_when_the_first_line_is_no_role():
    long_line = _Continuer("word " * 10, "and more.", first_reason="length")  # the first line ran past its budget
    ans = collect(echo_request(long_line, "a poem", 400))
    assert ans.text == "word " * 9 + "word " + "and more." and long_line.calls[1][0] == "word " * 9 + "word "
    empty = _Continuer("", "You are a poet.")  # the answer opened with a blank line
    ans = collect(echo_request(empty, "a poem", 400))
    assert "a poem" not in ans.text and ans.text == "You are a poet."


def test_echo_request_applies_on_a_first_turn_of_a_local_tier_only(engine, monkeypatch):
    from pet.config import ConfigError, parse_tiers

    seen = []

    class Fake:
        name, supports_prefix = "fake", True

        def stream(self, messages, params, prefix=""):
            seen.append(prefix)
            text = "You are a chef." if not prefix else "Format: a list."
            yield Chunk(text, 3, 0.1, 0.1)
            yield Chunk("", 3, 0.1, 0.1, True, "stop")

        def set_threads(self, n):
            pass

    tier = engine.tiers.names()[0]
    monkeypatch.setattr(engine.tiers, "backend", lambda name: Fake())
    p = engine.params_for(tier, echo_request=True, temperature=0.0)
    first = collect(engine.stream(tier, [{"role": "user", "content": "recipe for dal"}], p))
    assert first.text == "You are a chef.\n\nrecipe for dal\nFormat: a list." and seen == ["", "You are a chef.\n\nrecipe for dal\n"]
    seen.clear()
    follow = [{"role": "user", "content": "recipe for dal"}, {"role": "assistant", "content": first.text},
              {"role": "user", "content": "shorter"}]
    assert collect(engine.stream(tier, follow, p)).text == "You are a chef." and seen == [""]  # "shorter" is no task
    seen.clear()
    collect(engine.stream(tier, [{"role": "user", "content": "Don't let me forget the milk: a reminder"}], p))
    assert seen == [""]  # drop_avoid would take such a line out, so it is not echoed
    with pytest.raises(ConfigError, match=r"tiers.srv.params.echo_request: needs a model PET runs itself"):
        parse_tiers({"tiers": {"srv": {"backend": "ollama", "model": "gemma3n:e4b", "params": {"echo_request": True}}}},
                    engine.settings.home, "t.toml")
