"""Decoding that stays on the request: a loop guard, retrieval few-shot and best-of-N.

Each is a tier setting in `[params]` (loop_guard, fewshot, best_of) and works for every
backend, because it wraps the stream or the messages rather than the model.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator

from pet.backends.base import Chunk

LOOP = "loop"  # finish_reason of an answer the loop guard ended
_WORD = re.compile(r"[^\W\d_]+")


class LoopGuard:
    """Spots an answer that has started repeating itself.

    Two signs, both cheap enough to check after every chunk of a 2,000-character answer:
    the text ends in the same span (min_span..max_span characters) `repeats` times in a row,
    or one substantial line (>= min_line characters) has already appeared `repeats` times.
    Small models loop in both ways: "- Avoid jargon.\n- Avoid jargon.\n..." and a whole
    paragraph coming round again with a different line in between.
    """

    def __init__(self, min_span: int = 12, max_span: int = 300, repeats: int = 3, min_line: int = 24):
        self.min_span, self.max_span, self.repeats, self.min_line = min_span, max_span, repeats, min_line
        self.text = ""
        self._lines: Counter[str] = Counter()
        self._done_upto = 0  # lines before this offset are counted

    def feed(self, piece: str) -> bool:
        """Add text; True once the answer is looping."""
        self.text += piece
        return self._line_repeats() or self._tail_repeats()

    def _line_repeats(self) -> bool:
        end = self.text.rfind("\n")
        if end < self._done_upto:
            return False
        for line in self.text[self._done_upto:end].split("\n"):
            key = " ".join(line.lower().split())
            if len(key) >= self.min_line:
                self._lines[key] += 1
                if self._lines[key] >= self.repeats:
                    return True
        self._done_upto = end + 1
        return False

    def _tail_repeats(self) -> bool:
        t = self.text
        for span in range(self.min_span, min(self.max_span, len(t) // self.repeats) + 1):
            unit = t[-span:]
            if t[-span * self.repeats:] != unit * self.repeats or len(_WORD.findall(unit)) < 2:
                continue  # separators such as "=====" or "| --- |" repeat by design
            return True
        return False


def guard_loops(stream: Iterator[Chunk], guard: LoopGuard | None = None) -> Iterator[Chunk]:
    """Pass a stream through, ending it (finish_reason "loop") when it starts repeating.

    Closing the inner generator stops the backend's decoding, so a loop costs no more tokens.
    """
    guard = guard or LoopGuard()
    last = None
    try:
        for ch in stream:
            last = ch
            if ch.done:
                yield ch
                return
            yield ch
            if guard.feed(ch.text):
                yield Chunk("", ch.tokens, ch.elapsed_s, ch.ttft_s, True, LOOP)
                return
    finally:
        close = getattr(stream, "close", None)
        if close:
            close()
    if last is not None and not last.done:  # a backend that ended without a final chunk
        yield Chunk("", last.tokens, last.elapsed_s, last.ttft_s, True, "stop")


