"""Trial of noisy-channel reranking for a tier: per request, the greedy answer and 3 answers sampled at
temperature 0.5 (seeds 1-3), each through the tier's own decoding (loop guard, drop_avoid); then each candidate
is scored by how well it gives the request back, log P(request | candidate) under the untuned `base` tier
("What short, rough request was this prompt written from?"), a flipped point of view or a lost task makes the
request less likely. Also stored: the same under the tier itself, and the candidate's own mean log-probability.

    python bench/channel_trial.py gen --tier enhanced --requests bench/fresh_requests.jsonl --out cands.jsonl
    python bench/channel_trial.py pick cands.jsonl --rule base --label fresh --out-greedy g.jsonl --out-picked p.jsonl

`pick` writes, in bench/answers.py's format for judge_pack.py, every greedy answer and, where the rule chose
another candidate, that one (tier name + "_ch"). The rule was chosen on bench/dev_requests.jsonl; measured on
the fresh and held-out requests (README, "Noisy-channel reranking"); not a tier setting.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from answers import load_requests  # noqa: E402

from pet.backends.base import collect  # noqa: E402
from pet.engine import Engine  # noqa: E402

CHANNEL = ("Here is a prompt someone wrote for an AI model:\n\n---\n{c}\n---\n\n"
           "What short, rough request was this prompt written from? Reply with the request only.")
RULES = {"base": lambda c: c["ch_base"], "self": lambda c: c["ch_self"],
         "both": lambda c: c["ch_self"] + c["ch_base"], "mix": lambda c: c["ch_base"] + 20 * c["direct"]}


def scores(eng: Engine, tier: str, request: str, answer: str) -> dict:
    """log P(request | answer) under the tier and under base, and the answer's mean log-probability."""
    ch = [{"role": "user", "content": CHANNEL.format(c=answer.strip())}]
    direct = eng.logprobs(tier, [{"role": "user", "content": request}], answer)
    return {"ch_self": sum(eng.logprobs(tier, ch, request, system="")),
            "ch_base": sum(eng.logprobs("base", ch, request, system="")),
            "direct": sum(direct) / max(1, len(direct))}


def gen(a) -> None:
    eng = Engine()
    with open(a.out, "a", encoding="utf-8") as f:
        for i, r in enumerate(load_requests(a.requests, a.limit, a.skip)):
            msgs = [{"role": "user", "content": r["request"]}]
            for k in range(4):
                p = eng.params_for(a.tier, temperature=0.0 if k == 0 else 0.5, seed=k)
                if a.max_new_tokens:
                    p = p.with_overrides(max_new_tokens=a.max_new_tokens)
                t0 = time.perf_counter()
                ans = collect(eng.stream(a.tier, msgs, p))
                t1 = time.perf_counter()
                rec = {"tier": a.tier, "i": a.skip + i, "k": k, "request": r["request"], "answer": ans.text,
                       "finish_reason": ans.stats.finish_reason, "tokens": ans.stats.tokens,
                       "gen_s": round(t1 - t0, 2), **scores(eng, a.tier, r["request"], ans.text)}
                rec["score_s"] = round(time.perf_counter() - t1, 2)
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                f.flush()
            print(f"{a.tier} {i + 1}", flush=True)


def choose(cands: list[dict], rule: str) -> dict:
    """The candidate the rule ranks first among those that ended by themselves (all, if none did)."""
    ok = [c for c in cands if c["finish_reason"] == "stop"] or cands
    return max(ok, key=RULES[rule])


def pick(a) -> None:
    by = defaultdict(list)
    for line in open(a.cands, encoding="utf-8"):
        c = json.loads(line)
        by[c["i"]].append(c)
    changed = 0
    with open(a.out_greedy, "w", encoding="utf-8") as g, open(a.out_picked, "w", encoding="utf-8") as p:
        for i, cands in sorted(by.items()):
            cands.sort(key=lambda c: c["k"])
            best, greedy = choose(cands, a.rule), cands[0]
            row = {"label": a.label, "i": i, "request": greedy["request"]}
            g.write(json.dumps({**row, "tier": greedy["tier"], "answer": greedy["answer"],
                                "finish_reason": greedy["finish_reason"]}, ensure_ascii=False) + "\n")
            if best["k"] != 0:
                changed += 1
                p.write(json.dumps({**row, "tier": greedy["tier"] + "_ch", "answer": best["answer"], "k": best["k"],
                                    "finish_reason": best["finish_reason"]}, ensure_ascii=False) + "\n")
    print(f"{len(by)} requests, the rule chose another candidate than greedy for {changed}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("--tier", required=True)
    g.add_argument("--requests", default="bench/dev_requests.jsonl")
    g.add_argument("--out", required=True)
    g.add_argument("--skip", type=int, default=0)
    g.add_argument("--limit", type=int)
    g.add_argument("--max-new-tokens", type=int, help="instead of the tier's own (for a quick check)")
    p = sub.add_parser("pick")
    p.add_argument("cands")
    p.add_argument("--rule", choices=sorted(RULES), default="base")
    p.add_argument("--label", default="")
    p.add_argument("--out-greedy", required=True)
    p.add_argument("--out-picked", required=True)
    a = ap.parse_args(argv)
    (gen if a.cmd == "gen" else pick)(a)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
