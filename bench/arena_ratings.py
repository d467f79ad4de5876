"""Benchmark: rate 10,000 synthetic votes with bootstrap intervals (target: under 2 s).

    python bench/arena_ratings.py [--votes 10000] [--rounds 1000] [--tiers 6]

Prints the wall time of `pet.arena.ratings` (full fit + bootstrap + win-rate matrix + position
bias + next pair + online Elo), the median of a few repeats, and the fitted vs true ratings.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pet import arena  # noqa: E402


def synthetic(n_votes: int, n_tiers: int, seed: int = 0) -> tuple[list[dict], dict]:
    rng = np.random.default_rng(seed)
    true = {f"tier{k}": 1000.0 + 60.0 * (k - n_tiers / 2) for k in range(n_tiers)}
    names = list(true)
    r = np.array(list(true.values()))
    i = rng.integers(0, n_tiers, n_votes)
    j = (i + rng.integers(1, n_tiers, n_votes)) % n_tiers
    p = 1 / (1 + 10 ** ((r[j] - r[i]) / 400))
    u = rng.random(n_votes)
    win = np.where(u < 0.1, "tie", np.where(rng.random(n_votes) < p, "a", "b"))
    rows = [{"tier_a": names[a], "tier_b": names[b], "winner": w, "voted": float(k)}
            for k, (a, b, w) in enumerate(zip(i, j, win))]
    return rows, true


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--votes", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=1000)
    ap.add_argument("--tiers", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    if args.rounds < 500:
        ap.error("--rounds: the intervals need at least 500 bootstrap rounds")
    rows, true = synthetic(args.votes, args.tiers)
    times = []
    for k in range(args.repeats):
        t0 = time.perf_counter()
        res = arena.ratings(rows, rounds=args.rounds, seed=k)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    print(f"{args.votes} votes, {args.tiers} tiers, {args.rounds} bootstrap rounds: "
          f"median {med:.3f} s (min {min(times):.3f}, max {max(times):.3f}) over {args.repeats} runs")
    mean_true = sum(true.values()) / len(true)
    for row in res["table"]:
        print(f"  {row['tier']:<6} rating {row['rating']:7.1f}  [{row['ci_low']:.1f}, {row['ci_high']:.1f}]"
              f"  true {true[row['tier']] - mean_true + 1000:7.1f}")
    print("PASS: under 2 s" if max(times) < 2.0 else "FAIL: over 2 s")
    return 0 if max(times) < 2.0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
