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
