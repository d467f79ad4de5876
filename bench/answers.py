"""Answers for blind judging (../shared/JUDGING.md): each tier, each request, greedy, the tier's own
system prompt and max tokens. Writes one JSON line per answer.

    python bench/answers.py --tiers light,enhanced,base --requests bench/fresh_requests.jsonl \
        --out answers.jsonl [--label after] [--no-loop-guard] [--skip N] [--limit N]

`--requests heldout` takes the first user turns of the latest dataset's held-out split instead.
Then `python bench/judge_pack.py` shuffles several answer files into a blind pack for a judge.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pet import dataset  # noqa: E402
from pet.engine import Engine  # noqa: E402


def load_requests(src: str, limit: int | None, skip: int = 0) -> list[dict]:
    if src == "heldout":
        _, held = dataset.split(dataset.read_jsonl(dataset.SHIPPED))
        rows = [{"request": dataset.first_user(e), "domain": e.get("domain", "")} for e in held]
    else:
        rows = [json.loads(line) for line in open(src, encoding="utf-8") if line.strip()]
    rows = rows[skip:]
    return rows[:limit] if limit else rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiers", required=True)
    ap.add_argument("--requests", default="bench/fresh_requests.jsonl")
    ap.add_argument("--out", required=True)
    ap.add_argument("--label", default="", help="a tag stored with each answer (e.g. before, after)")
    ap.add_argument("--limit", type=int)
    ap.add_argument("--skip", type=int, default=0, help="leave out the first N requests (a set not judged before)")
    ap.add_argument("--no-loop-guard", action="store_true", help="decode as the tiers did before the loop guard")
    a = ap.parse_args(argv)
    eng = Engine()
    rows = load_requests(a.requests, a.limit, a.skip)
    with open(a.out, "a", encoding="utf-8") as f:
        for tier in a.tiers.split(","):
            params = eng.params_for(tier, temperature=0.0, seed=0)
            if a.no_loop_guard:
                params = params.with_overrides(loop_guard=False)
            for i, r in enumerate(rows):
                t0 = time.perf_counter()
                ans = eng.generate(tier, [{"role": "user", "content": r["request"]}], params)
                rec = {"label": a.label, "tier": tier, "i": i, "request": r["request"], "answer": ans.text,
                       **ans.stats.as_dict(), "wall_s": round(time.perf_counter() - t0, 2)}
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                f.flush()
                print(f"{tier} {i + 1}/{len(rows)} {ans.stats.tokens} tok {ans.stats.finish_reason}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
