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
_MARKER = re.compile(r"^(?:[-*\u2022]|\d{1,3}[.)]|[a-z][.)])\s+")  # "- ", "3. ", "b) ": a list item's marker
_SLOT = re.compile(r"\[[^\]]*\]")  # a [slot] for the user to fill: "1. [model]\n2. [model]" is a form, not a loop


class LoopGuard:
    """Spots an answer that has started repeating itself.

    Two signs, both cheap enough to check after every chunk of a 2,000-character answer:
    the text ends in the same span (min_span..max_span characters) `repeats` times in a row,
    or one substantial line (>= min_line characters) has already appeared `repeats` times, its
    list marker aside. Small models loop in both ways: "- Avoid jargon.\n- Avoid jargon.\n..." and a
    whole paragraph coming round again with a different line in between, or a numbered list whose
    items come round again under new numbers ("1. Check X", "2. ...", "3. Check X", ...).
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
            key = _MARKER.sub("", " ".join(line.lower().split()))
            if len(_SLOT.sub("", key)) >= self.min_line:
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




# -- retrieval few-shot ------------------------------------------------------------------------------
class FewShotIndex:
    """The curated examples nearest a request, as demonstrations (earlier turns of the conversation).

    Built over the train split only, so a held-out benchmark request never sees its own reference.
    Embeddings are cached per dataset content (`key`, e.g. the version's SHA-256) in `cache_dir` as
    .npy, so a restart does not embed a thousand examples again.
    """

    def __init__(self, examples: list[dict], key: str, cache_dir=None):
        from pet import dataset

        self.examples = [e for e in examples if not dataset.is_heldout(e)]
        self.key = key
        self._vecs = None
        self._cache = (cache_dir / f"fewshot-{key[:24]}.npy") if cache_dir is not None else None

    def vectors(self):
        import numpy as np

        from pet import dataset, embed

        if self._vecs is None:
            if self._cache is not None and self._cache.is_file():
                vecs = np.load(self._cache, allow_pickle=False)
                if vecs.shape[0] == len(self.examples):
                    self._vecs = vecs
            if self._vecs is None:
                self._vecs = embed.encode([dataset.first_user(e) for e in self.examples])
                if self._cache is not None:
                    from pet.files import atomic_path

                    with atomic_path(self._cache, suffix=".npy") as tmp:  # np.save adds .npy to other names
                        np.save(tmp, self._vecs, allow_pickle=False)
        return self._vecs

    def nearest(self, request: str, k: int) -> list[dict]:
        from pet import embed

        if k <= 0 or not self.examples:
            return []
        idx = embed.nearest(embed.encode([request]), self.vectors(), k)[0]
        return [self.examples[i] for i in idx]


def with_demonstrations(messages: list[dict], demos: list[dict], budget_chars: int) -> list[dict]:
    """Insert demonstrations after the system message, nearest last (closest to the request),
    dropping the farthest ones that do not fit `budget_chars` of prompt."""
    head = messages[:1] if messages and messages[0]["role"] == "system" else []
    rest = messages[len(head):]
    chosen, used = [], sum(len(m["content"]) for m in messages)
    for d in demos:  # nearest first
        turns = [{"role": m["role"], "content": m["content"]} for m in d["messages"] if m["role"] != "system"]
        size = sum(len(m["content"]) for m in turns)
        if used + size > budget_chars:
            continue
        chosen.append(turns)
        used += size
    shots = [m for turns in reversed(chosen) for m in turns]
    return head + shots + rest


# -- best-of-N ---------------------------------------------------------------------------------------
def rank_key(request: str, text: str, finish_reason: str | None) -> tuple:
    """How well one candidate does PET's job, as a sortable key (higher is better): it ended by itself,
    it rewrites rather than answers, it keeps the request's subject, then its PET score."""
    from pet import score

    s = score.score_prompt(text, request)
    return (finish_reason == "stop", not score.is_answer_not_rewrite(request, text),
            round(score.keeps_subject(request, text), 1), s.total)


def best_of(make_stream, n: int, request: str) -> Iterator[Chunk]:
    """Draw n candidates (make_stream(i) streams candidate i), return the best as one chunk.

    Nothing is shown until all n are done, so the time to first token is the whole cost; the last
    chunk's tokens count every candidate's tokens, so tokens/s stays an honest cost figure.
    """
    import time

    from pet.backends.base import collect

    t0 = time.perf_counter()
    cands = []
    for i in range(n):
        ans = collect(make_stream(i))
        cands.append((rank_key(request, ans.text, ans.stats.finish_reason), i, ans))
    cands.sort(key=lambda c: (c[0], -c[1]), reverse=True)
    best = cands[0][2]
    total = sum(c[2].stats.tokens for c in cands)
    now = time.perf_counter() - t0
    yield Chunk(best.text, total, now, now)
    yield Chunk("", total, now, now, True, best.stats.finish_reason)
