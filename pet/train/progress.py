"""What a run is doing now and how long it has left, from speeds measured in this run.

The trainer reports each phase (loading, converting, evaluating, training, saving) with its own
progress in status.json; the UI and `jobs.info` read it from there. The ETA adds the steps left at
the measured time per step and the evaluations left at the measured time per evaluation; before the
first step it derives the step time from the evaluation's speed (a step costs about three forward
passes per token: forward, and backward at about twice that).
"""

from __future__ import annotations

import time

STEP_COST = 3.0  # a training step's time per token, in forward passes


class Progress:
    def __init__(self, total_steps: int, eval_every: int | None, heldout_tokens: int, tokens_per_step: float):
        self.total = total_steps
        self.eval_every = eval_every  # None: this run does not evaluate
        self.heldout_tokens = heldout_tokens
        self.tokens_per_step = tokens_per_step
        self.step_times: list[float] = []  # after the first step, which pays one-off costs
        self.first_step: float | None = None
        self.eval_s: float | None = None  # the last full evaluation's duration
        self.eval_tok_s: float | None = None
        self.train_tok_s: float | None = None

    def evals_left(self, step: int, include_current: bool = False) -> int:
        """Evaluations still to run after `step` (at every eval_every steps and at the last step)."""
        if not self.eval_every:
            return 0
        n = self.total // self.eval_every - step // self.eval_every
        if self.total % self.eval_every:
            n += 1
        return max(0, n) + (1 if include_current else 0)

    def step_s(self, eval_rate: float | None = None) -> float | None:
        if self.step_times:
            return sum(self.step_times[-20:]) / len(self.step_times[-20:])
        if self.first_step is not None:
            return self.first_step
        rate = self.eval_tok_s or eval_rate
        return self.tokens_per_step * STEP_COST / rate if rate else None

    def eta(self, step: int, eval_left_s: float = 0.0, eval_rate: float | None = None) -> float | None:
        """Seconds left after `step` steps, plus what is left of an evaluation in progress
        (`eval_rate`: that evaluation's speed so far, used until one has been measured whole)."""
        per_step = self.step_s(eval_rate)
        if per_step is None:
            return None
        rate = self.eval_tok_s or eval_rate
        per_eval = self.eval_s if self.eval_s is not None else (self.heldout_tokens / rate if rate else 0.0)
        return round(eval_left_s + per_step * (self.total - step) + per_eval * self.evals_left(step), 1)

    def record_step(self, seconds: float, tokens: int) -> None:
        if self.first_step is None:
            self.first_step = seconds
            return
        self.step_times.append(seconds)
        self.train_tok_s = tokens / seconds if seconds > 0 else None

    def record_eval(self, seconds: float, tokens: int) -> None:
        self.eval_s = seconds
        if seconds > 0 and tokens:
            self.eval_tok_s = tokens / seconds


class EvalClock:
    """Time left in one evaluation, from its own speed so far (tokens done vs tokens to do)."""

    def __init__(self, total_tokens: int):
        self.total = max(1, total_tokens)
        self.done = 0
        self.t0 = time.perf_counter()

    def add(self, tokens: int) -> None:
        self.done += tokens

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def rate(self) -> float | None:
        e = self.elapsed()
        return self.done / e if self.done and e > 0 else None

    def left_s(self) -> float | None:
        r = self.rate()
        return (self.total - self.done) / r if r else None
