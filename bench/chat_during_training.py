"""Chat while a LoRA trains: does each keep its speed? (issue 13, item 1)

    python bench/chat_during_training.py [--budget pet|naive] [--chats 4] [--max-tokens 128] [--window-steps 4]

One run, in this order, on the machine's own cores:
  1. chat alone: the light tier answers --chats requests through the Engine (as the app serves them);
  2. a training job starts in the background (jobs.start, the Train tab's path) on a small slice of the
     curated examples, for the enhanced tier's Gemma 3 270M;
  3. training alone for --window-steps optimizer steps;
  4. chat during training: the same requests, back to back, for at least --window-steps steps;
  5. training alone again for --window-steps steps; then the job is cancelled.
It prints chat decode tokens/s during training against alone (goal >= 0.5) and training tokens/s with a
chat against without one (the mean of windows 3 and 5; goal >= 0.67), and a JSON line.

--budget pet uses the thread budget (PET_THREADS, PET_SERVE_THREADS, PET_TRAIN_THREADS: by default the
cores split in half while a job runs); --budget naive gives both every core, as PET did before it had one,
so running both shows what the budget buys.

Training tokens/s in a window come from the job's metrics.jsonl: each step's row has the tokens trained and
the training seconds so far (evaluations left out), so a window's rate is their difference's ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PROMPT = "improve this prompt: write a detailed travel guide for a week in Lisbon, with a budget and a map"


def chat(eng, tier: str, n: int, max_tokens: int, until=None) -> list[dict]:
    """n answers (and more while until() is true); decode tokens/s and tokens of each."""
    from pet.backends.base import collect

    params = eng.params_for(tier, max_new_tokens=max_tokens, temperature=0.0, seed=1, loop_guard=False)
    msgs = [{"role": "user", "content": PROMPT}]
    out = []
    while len(out) < n or (until is not None and until()):
        st = collect(eng.stream(tier, msgs, params)).stats
        out.append({"tok_s": st.tok_s, "tokens": st.tokens, "threads": eng.serve_threads()})
    return out


class Job:
    """A background training job, read through its run folder."""

    def __init__(self, home: Path, run_id: str):
        from pet.train import jobs

        self.jobs, self.home, self.id = jobs, home, run_id
        self.dir = jobs.runs_dir(home) / run_id

    def rows(self) -> list[dict]:
        return [r for r in self.jobs.read_metrics(self.dir) if "loss" in r and not r.get("final")]

    def step(self) -> int:
        rows = self.rows()
        return rows[-1]["step"] if rows else 0

    def wait_step(self, step: int, timeout: float = 3600) -> None:
        deadline = time.monotonic() + timeout
        while self.step() < step:
            st = self.jobs.info(self.dir)["state"]
            if st not in self.jobs.LIVE:
                raise SystemExit(f"training job {self.id} is {st}:\n{self.jobs.log_tail(self.dir)}")
            if time.monotonic() > deadline:
                raise SystemExit(f"training job {self.id} did not reach step {step} in {timeout:.0f}s")
            time.sleep(0.5)

    def point(self) -> tuple[float, float]:
        """(training seconds, tokens trained) at the latest step."""
        rows = self.rows()
        last = rows[-1]
        if "train_s" in last:  # the trainer's own running totals (evaluations left out)
            return last["train_s"], float(last["tokens"])
        first = next(r for r in rows if r["step"] == 1)  # older trainers: rate x time since step 1
        seconds = last["elapsed_s"] - first["elapsed_s"]
        return seconds, (last["tokens_per_s"] or 0.0) * seconds


def rate(a: tuple[float, float], b: tuple[float, float]) -> float:
    return (b[1] - a[1]) / (b[0] - a[0]) if b[0] > a[0] else float("nan")


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", choices=["pet", "naive"], default="pet")
    ap.add_argument("--chats", type=int, default=4, help="answers per chat phase (at least)")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--window-steps", type=int, default=4, help="optimizer steps per training window")
    ap.add_argument("--examples", type=int, default=60, help="curated examples the job trains on")
    ap.add_argument("--chat-tier", default="light")
    ap.add_argument("--train-tier", default="enhanced")
    ap.add_argument("--home", help="PET_HOME for the job's run folder (default: a temporary folder)")
    return ap.parse_args()


def _engine(a: argparse.Namespace):
    """(engine, settings, thread budget, home): the budget asked for, on a home sharing the model caches."""
    from dataclasses import replace

    from pet.config import Settings, ThreadBudget
    from pet.engine import Engine

    base = Settings.from_env()
    budget = base.threads
    if a.budget == "naive":
        budget = ThreadBudget(cores=budget.cores, serve=budget.cores, train=budget.cores, max_jobs=budget.max_jobs)
    home = Path(a.home or tempfile.mkdtemp(prefix="pet-bench-cdt-"))
    for sub in ("models", "cache"):  # share the model caches of the usual home: no re-conversion
        link = home / sub
        if not link.exists():
            home.mkdir(parents=True, exist_ok=True)
            link.symlink_to(base.path(sub), target_is_directory=True)
    return Engine(replace(base, home=home, threads=budget)), base, budget, home


def _training_data(home: Path, n_examples: int) -> Path:
    """A slice of the curated examples, with a small held-out set: evaluation is not what is measured."""
    from pet import dataset

    data = home / "bench_examples.jsonl"
    rows = dataset.read_jsonl(dataset.SHIPPED)
    held = [e for e in rows if dataset.is_heldout(e)][:4]
    train = [e for e in rows if not dataset.is_heldout(e)][:n_examples]
    data.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in train + held), encoding="utf-8")
    return data


def _windows(job: Job, eng, a: argparse.Namespace) -> tuple[list, list[dict]]:
    """Training points p0..p3 around the three windows (alone, with chats, alone), and the chats of the middle one."""
    job.wait_step(2, timeout=1800)  # loaded, past the warm-up step
    p0 = job.point()
    job.wait_step(job.step() + a.window_steps)
    p1 = job.point()
    target = job.step() + a.window_steps
    during = chat(eng, a.chat_tier, a.chats, a.max_tokens, until=lambda: job.step() < target)
    p2 = job.point()
    job.wait_step(job.step() + a.window_steps)
    return [p0, p1, p2, job.point()], during


def _result(a: argparse.Namespace, budget, alone: list[dict], during: list[dict], p: list) -> dict:
    chat_alone = statistics.median(c["tok_s"] for c in alone)
    chat_during = statistics.median(c["tok_s"] for c in during)
    train_alone = (rate(p[0], p[1]) + rate(p[2], p[3])) / 2
    train_with_chat = rate(p[1], p[2])
    return {"budget": a.budget, "cores": budget.cores, "serve_threads_training": budget.serve,
            "train_threads": budget.train, "chat_tok_s_alone": round(chat_alone, 1),
            "chat_tok_s_during_training": round(chat_during, 1), "chat_ratio": round(chat_during / chat_alone, 3),
            "train_tok_s_alone": round(train_alone, 1), "train_tok_s_with_chat": round(train_with_chat, 1),
            "train_ratio": round(train_with_chat / train_alone, 3), "chats_during": len(during),
            "chat_tokens": [c["tokens"] for c in alone + during],
            "windows": {"train_alone_before": round(rate(p[0], p[1]), 1), "with_chat": round(train_with_chat, 1),
                        "train_alone_after": round(rate(p[2], p[3]), 1)}}


def main() -> int:
    a = _args()
    from pet.train import jobs
    from pet.train.trainer import TrainConfig

    eng, base, budget, home = _engine(a)
    print(f"cores {budget.cores}; budget {a.budget}: serve {budget.serve} while training, train {budget.train}",
          flush=True)
    chat(eng, a.chat_tier, 1, 8)  # load + warm up
    alone = chat(eng, a.chat_tier, a.chats, a.max_tokens)
    print(f"chat alone: {statistics.median(c['tok_s'] for c in alone):.1f} tok/s", flush=True)

    data = _training_data(home, a.examples)
    cfg = TrainConfig(tier=a.train_tier, data=str(data), max_steps=4 * a.window_steps + 100, grad_accum=1,
                      eval_every=10**6)
    job = Job(home, jobs.start(home, cfg, tiers_path=base.tiers_path, threads=budget))
    try:
        points, during = _windows(job, eng, a)
    finally:
        try:
            jobs.cancel(home, job.id, wait_s=60)
        except Exception as e:  # already ended: nothing to cancel
            print(f"(cancel: {e})", file=sys.stderr)
    res = _result(a, budget, alone, during, points)
    print(f"chat decode: {res['chat_tok_s_during_training']:.1f} tok/s during training vs "
          f"{res['chat_tok_s_alone']:.1f} alone = {res['chat_ratio']:.2f}x (goal >= 0.5)")
    print(f"training: {res['train_tok_s_with_chat']:.1f} tok/s with a chat vs {res['train_tok_s_alone']:.1f} without = "
          f"{res['train_ratio']:.2f}x (goal >= 0.67)")
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
