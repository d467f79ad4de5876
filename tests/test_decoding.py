"""Decoding that stays on the request: the loop guard, few-shot and best-of-N."""

from __future__ import annotations

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
