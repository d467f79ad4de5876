"""The stream-first backend interface.

A backend yields Chunks; the full answer is the joined stream. Every chunk carries the
timing since the request started, so callers report time to first token, tokens/s and
the token count without timing anything themselves.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from pet import PetError
from pet.config import GenParams


class BackendError(PetError):
    """A backend could not serve: the message says why and what to do."""


@dataclass(frozen=True)
class Chunk:
    text: str
    tokens: int  # tokens generated so far, this chunk included
    elapsed_s: float  # since the request started
    ttft_s: float  # time to the first generated token
    done: bool = False
    finish_reason: str | None = None  # "stop", "length", "cancelled" on the last chunk
    prompt_tokens: int | None = None  # on the last chunk, when the backend knows the prompt's length
    notice: str = ""  # something the user should know about this answer (e.g. the conversation was trimmed)


@dataclass
class Stats:
    tokens: int = 0
    ttft_s: float = 0.0
    total_s: float = 0.0
    finish_reason: str | None = None

    @property
    def tok_s(self) -> float:
        """Decode speed: tokens after the first over the time after the first."""
        decode = self.total_s - self.ttft_s
        if self.tokens <= 1 or decode <= 0:
            return 0.0
        return (self.tokens - 1) / decode

    def as_dict(self) -> dict:
        return {"tokens": self.tokens, "ttft_s": round(self.ttft_s, 4), "tok_s": round(self.tok_s, 2),
                "total_s": round(self.total_s, 4), "finish_reason": self.finish_reason}

    def update(self, ch: Chunk) -> Stats:
        """Take the running totals a chunk carries (its finish reason too, on the last chunk)."""
        self.tokens, self.ttft_s, self.total_s = ch.tokens, ch.ttft_s, ch.elapsed_s
        if ch.done:
            self.finish_reason = ch.finish_reason
        return self

    @classmethod
    def of(cls, ch: Chunk | None) -> Stats:
        """The stats of a finished answer, from its last chunk (empty when nothing came)."""
        return cls(ch.tokens, ch.ttft_s, ch.elapsed_s, ch.finish_reason) if ch is not None else cls()

    def line(self) -> str:
        return stats_line(self)


def stats_line(s: Stats | dict) -> str:
    """The one timing line shown under an answer (chat, compare, arena, CLI): a Stats or its as_dict()."""
    if isinstance(s, Stats):
        ttft, tok_s, tokens, reason = s.ttft_s, s.tok_s, s.tokens, s.finish_reason
    else:
        ttft, tok_s, tokens, reason = s.get("ttft_s", 0), s.get("tok_s", 0), s.get("tokens", 0), s.get("finish_reason")
    line = f"TTFT {ttft:.2f} s · {tok_s:.1f} tok/s · {tokens} tokens"
    return f"{line} · {ENDINGS[reason]}" if reason in ENDINGS else line


# How an answer that did not end by itself ended, for the stats line ("stop" says nothing).
ENDINGS = {"loop": "stopped: it began repeating itself (loop guard)",
           "length": "cut at the max-tokens limit",
           "cancelled": "stopped before the end"}


@dataclass
class Answer:
    text: str
    stats: Stats = field(default_factory=Stats)
    notice: str = ""


class Clock:
    """Stamps chunks for one request."""

    def __init__(self):
        self.start = time.perf_counter()
        self.first: float | None = None
        self.tokens = 0

    def chunk(self, text: str, new_tokens: int = 1) -> Chunk:
        now = time.perf_counter() - self.start
        if self.first is None:
            self.first = now
        self.tokens += new_tokens
        return Chunk(text, self.tokens, now, self.first or now)

    def last(self, reason: str, prompt_tokens: int | None = None) -> Chunk:
        now = time.perf_counter() - self.start
        return Chunk("", self.tokens, now, self.first if self.first is not None else now, True, reason,
                     prompt_tokens)


def fit_context(messages: list[dict], count: Callable[[list[dict]], int], limit: int) -> tuple[list[dict], str]:
    """Trim a conversation until count(messages) <= limit: first the oldest turns (in user/assistant
    pairs, so it still opens with the user), then the end of the latest request, then the end of the
    system prompt. Returns the messages and a notice saying what was cut ("" when nothing was)."""
    total = count(messages)
    if total <= limit:
        return messages, ""
    system = [m for m in messages[:1] if m["role"] == "system"]
    turns = messages[len(system):]
    dropped = 0
    while len(turns) > 2 and count(system + turns) > limit:
        turns, dropped = turns[2:], dropped + 2
    cut = []
    if count(system + turns) > limit and turns:
        turns = turns[:-1] + [_shorten(turns[-1], lambda m: count(system + turns[:-1] + [m]), limit)]
        cut.append(f"your request to its first {len(turns[-1]['content']) - len(TRIMMED)} characters")
    if count(system + turns) > limit and system:
        system = [_shorten(system[0], lambda m: count([m] + turns), limit)]
        cut.append("the system prompt")
    if count(system + turns) > limit:
        raise BackendError(f"the conversation cannot fit the {limit}-token budget even trimmed: raise n_ctx")
    what = ([f"left out the {dropped} oldest messages"] if dropped else []) + \
        ([("shortened " + " and ".join(cut))] if cut else [])
    return system + turns, (f"The conversation was {total} tokens, more than the context leaves room for "
                            f"({limit} with space for the answer): PET {' and '.join(what)}. Clear the chat, "
                            "shorten the request or raise n_ctx to keep everything.")


TRIMMED = " […]"


def _shorten(msg: dict, count: Callable[[dict], int], limit: int) -> dict:
    """The message with the longest start of its content that fits (binary search on characters)."""
    text = msg["content"]
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count({**msg, "content": text[:mid] + TRIMMED}) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return {**msg, "content": text[:lo] + TRIMMED}


def with_notice(stream: Iterator[Chunk], notice: str) -> Iterator[Chunk]:
    """Every chunk of the stream carries the notice (a caller may look at any one of them), after any
    notice it already had."""
    if not notice:
        yield from stream
        return
    for ch in stream:
        yield replace(ch, notice=f"{ch.notice} {notice}" if ch.notice and notice not in ch.notice else notice)


def collect(stream: Iterator[Chunk]) -> Answer:
    """Join a stream into an Answer (the non-streaming call)."""
    parts, stats, notice = [], Stats(), ""
    for ch in stream:
        parts.append(ch.text)
        notice = ch.notice or notice
        stats.update(ch)
    return Answer("".join(parts), stats, notice)


class Backend(ABC):
    """One loaded model. `stream` must be safe to call from several threads (serialise inside)."""

    name: str = "backend"
    supports_grammar: bool = False  # stream(..., grammar=GBNF) constrains the answer (llama.cpp)
    supports_prefix: bool = False  # stream(..., prefix=TEXT) continues an answer that starts with TEXT
    remote: bool = False  # served by another process (Ollama, an OpenAI-compatible server) that can go away

    @abstractmethod
    def load(self) -> None: ...

    @abstractmethod
    def stream(self, messages: list[dict], params: GenParams) -> Iterator[Chunk]:
        """Yield chunks of the answer to `messages` (system message first if any)."""

    def logprobs(self, messages: list[dict], answer: str) -> list[float]:
        """Log-probability of each token of `answer` (with its end-of-turn marker) after `messages`."""
        raise BackendError(f"the {self.name} backend gives no log-probabilities")

    def set_threads(self, n: int) -> None:
        """Use n CPU threads from the next request on (the CPU is shared with training jobs).
        Backends that compute elsewhere (a server) ignore it."""

    def describe(self) -> dict:
        return {}

    def close(self) -> None:
        pass
