"""Decoding that stays on the request: a loop guard, retrieval few-shot, best-of-N, leaving out
"Avoid:" lines and echoing the request.

Each is a tier setting in `[params]` (loop_guard, fewshot, best_of, drop_avoid, echo_request). All but
echo_request work for every backend, because they wrap the stream or the messages rather than the model;
echo_request needs a backend that can go on from an answer already started (supports_prefix).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace

from pet.backends.base import Chunk

LOOP = "loop"  # finish_reason of an answer the loop guard ended
_WORD = re.compile(r"[^\W\d_]+")
_MARKER = re.compile(r"^(?:[-*\u2022]|\d{1,3}[.)]|[a-z][.)])\s+")  # "- ", "3. ", "b) ": a list item's marker
_SLOT = re.compile(r"\[[^\]]*\]")  # a [slot] for the user to fill: "1. [model]\n2. [model]" is a form, not a loop
_DIGITS = re.compile(r"\d+")


class LoopGuard:
    """Spots an answer that has started repeating itself.

    Two signs, both cheap enough to check after every chunk of a 2,000-character answer:
    the text ends in the same span (min_span..max_span characters) `repeats` times in a row,
    or one substantial line (>= min_line characters) has already appeared `repeats` times, its
    list marker aside. Small models loop in both ways: "- Avoid jargon.\n- Avoid jargon.\n..." and a
    whole paragraph coming round again with a different line in between, or a numbered list whose
    items come round again under new numbers ("1. Check X", "2. ...", "3. Check X", ...).
    A third sign: the text ends in the same short span `count_repeats` times in a row once its numbers
    are set aside, a list that counts on and on ("409 Forbidden / 410 Forbidden / 411 Forbidden ...");
    a span with a [slot] is a form to fill ("Week 1: [goal]", "Week 2: [goal]"), not a loop.
    """

    def __init__(self, min_span: int = 12, max_span: int = 300, repeats: int = 3, min_line: int = 24,
                 count_repeats: int = 8, count_span: int = 120):
        self.min_span, self.max_span, self.repeats, self.min_line = min_span, max_span, repeats, min_line
        self.count_repeats, self.count_span = count_repeats, count_span
        self.text = ""
        self._lines: Counter[str] = Counter()
        self._done_upto = 0  # lines before this offset are counted

    def feed(self, piece: str) -> bool:
        """Add text; True once the answer is looping."""
        self.text += piece
        return self._line_repeats() or self._tail_repeats() or self._counts_on()

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

    def _counts_on(self) -> bool:
        n = self.count_repeats
        if not any(c.isdigit() for c in self.text[-self.count_span:]):
            return False  # the common case, checked after every chunk: nothing counting at the end
        # read a little more than n spans: "409" becomes "#", so the text shrinks when its numbers go
        t = _DIGITS.sub("#", self.text[-(self.count_span + 8) * n:])
        for span in range(6, min(self.count_span, len(t) // n) + 1):
            unit = t[-span:]
            if "#" in unit and "[" not in unit and _WORD.search(unit) and t[-span * n:] == unit * n:
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


# -- drop "Avoid:" lines -----------------------------------------------------------------------------
# "Avoid", "Do not", "Never", and "avoid" in the other six languages of PET's examples (es/pt/it, fr, de, nl),
# at the start of a line (after its list marker, if any).
_NEGATIVE = re.compile(r"(?:avoid|do not|don['\u2019]?t|never|evit(?:a|e|ar|are)|[ée]vit(?:e|ez|er)|vermeide[nt]?|"
                       r"vermijd(?:en)?)(?![\w'\u2019-])", re.I)
_BLOCKS = "blocks added"  # compared case-blind, after any leading "**" or "#", as pet.score finds the line
_DONT_ITEM = re.compile(r"(?:and\s+)?DON['\u2019]?T\b", re.I)
_DECIDE_AT = 12  # characters of a line (indentation aside) that tell whether it is negative


def negative_line(line: str) -> bool:
    """A line that only forbids: "Avoid: ...", "- Do not ...", "4. Never ...", "Evita: ...", "Vermeide: ..."."""
    return bool(_NEGATIVE.match(_MARKER.sub("", line.lstrip())))


def _top_level_items(s: str) -> list[str]:
    """A "Blocks added:" list split at the commas outside parentheses."""
    out, depth, cur = [], 0, ""
    for ch in s:
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return [*out, cur.strip()]


def without_dont(blocks_line: str) -> str:
    """The "Blocks added:" line without its DON'T item (for an answer whose negative lines were left out)."""
    head, _, rest = blocks_line.partition(":")
    items = _top_level_items(rest.strip().rstrip("."))
    keep = [i for i in items if not _DONT_ITEM.match(i)]
    if len(keep) == len(items) or not keep:
        return blocks_line
    keep[-1] = keep[-1].removeprefix("and ")
    return f"{head}: {', '.join(keep)}."


class AvoidFilter:
    """Leaves an answer's negative lines ("Avoid: ...", "Do not ...") out, as it streams.

    A line is held only until its first characters tell whether it is negative; a kept line then streams
    on as it comes. The "Blocks added:" line is held to the end, so that it stops claiming a DON'T block
    once the negative lines are gone. A blank line that would double up where a line was left out goes too.
    """

    def __init__(self):
        self.line = ""  # the current line's text, held while undecided, dropped or a Blocks line
        self.state = "undecided"  # or "keep" (streams as it comes), "drop", "blocks" (held to the end)
        self.dropped = 0
        self.blank_before = False  # the last line shown was blank

    def feed(self, text: str) -> str:
        """Text in, the part of it to show now out."""
        out = []
        for part in re.split(r"(\n)", text):
            if part == "\n":
                out.append(self._finish())
            elif part:
                out.append(part if self.state == "keep" else self._hold(part))
        return "".join(out)

    def close(self) -> str:
        """What is still held when the answer ends."""
        return self._finish().removesuffix("\n") if self.line or self.state != "undecided" else ""

    def _hold(self, part: str) -> str:
        self.line += part
        return self._decide(final=False)

    def _decide(self, final: bool) -> str:
        """Settle the current line's state once its start tells; return what to show of it now."""
        if self.state != "undecided":
            return ""
        head = self.line.lstrip()
        word = re.sub(r"^\W+", "", head).lower()
        if word.startswith(_BLOCKS):
            self.state = "blocks"
        elif not final and (_BLOCKS.startswith(word) or len(head) < _DECIDE_AT):
            return ""
        elif negative_line(head):
            self.state = "drop"
        elif not head and self.blank_before and self.dropped:
            self.state = "drop"  # a blank line doubling one already shown, where a line was left out
        else:
            self.state = "keep"
            self.blank_before = not head
            shown, self.line = self.line, ""
            return shown
        return ""

    def _finish(self) -> str:
        shown = self._decide(final=True)
        state, line = self.state, self.line
        self.state, self.line = "undecided", ""
        if state == "drop":
            self.dropped += bool(line.strip())
            return ""
        if state == "blocks":
            self.blank_before = False
            return (without_dont(line) if self.dropped else line) + "\n"
        return shown + line + "\n"


def drop_avoid(stream: Iterator[Chunk]) -> Iterator[Chunk]:
    """Pass a stream through an AvoidFilter; the last chunk carries whatever was held to the end.

    When the backend fails mid-answer, what was held back (and is not a negative line) is shown before the
    error goes on, as it would have been without the filter; stopping the answer stops the backend."""
    f, last = AvoidFilter(), None
    try:
        for ch in stream:
            last = ch
            text = f.feed(ch.text)
            if ch.done:
                text += f.close()
            yield replace(ch, text=text)
    except Exception:
        held = f.close()
        if held and last is not None:
            yield replace(last, text=held, done=False, finish_reason=None)
        raise
    finally:
        close = getattr(stream, "close", None)
        if close:
            close()


# -- the request, word for word, as the task ---------------------------------------------------------
ROLE_TOKENS = 60  # the most the first line (the role) may take before the request goes in


def echo_request(make_stream, request: str, max_new_tokens: int) -> Iterator[Chunk]:
    """The tier writes its first line (the role), then the request goes in word for word as the task, then
    the tier goes on from there: a small model that rewrites the task line can turn a tenant into a landlord
    or a quiz into a lesson; a copied task line cannot drift (the lines after it still can: README).

    make_stream(prefix, stop, max_tokens) streams the answer after `prefix` (already written), stopping at
    the strings in `stop`. The chunks count the tokens of both calls; the echoed request costs none. When
    the first line is empty or runs past ROLE_TOKENS, the answer goes on from where it is, with no echo.
    """
    first, last = "", None
    for ch in make_stream("", ("\n",), min(ROLE_TOKENS, max_new_tokens)):
        if ch.done:
            last = ch
            break
        first += ch.text
        yield ch
    if last is None:
        return
    role = first.strip()
    echo = f"\n\n{request.strip()}\n" if last.finish_reason == "stop" and role else ""
    if last.tokens >= max_new_tokens:
        yield last
        return
    if echo:
        yield replace(last, text=echo, done=False, finish_reason=None)
    for ch in make_stream(role + echo if echo else first, (), max_new_tokens - last.tokens):
        yield replace(ch, tokens=last.tokens + ch.tokens, elapsed_s=last.elapsed_s + ch.elapsed_s,
                      ttft_s=last.ttft_s if first else last.elapsed_s + ch.ttft_s)
