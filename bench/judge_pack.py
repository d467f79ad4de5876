"""Blind judging, as ../shared/JUDGING.md asks: shuffle answers of several tiers (and runs) together
without their names, let a judge score each 1-5, then un-blind the scores.

    python bench/judge_pack.py pack answers_a.jsonl answers_b.jsonl --out pack/ [--seed 7]
        writes pack/pack1.md ... (what the judges see: id, request, answer; --parts N packs, each
        request's answers in one pack) and pack/key.jsonl
    python bench/judge_pack.py score pack/ scores.jsonl [--json]
        scores.jsonl: {"id": "...", "score": 1-5, "why": "..."} per line, from the judge;
        prints counts of each score, the mean and the share >= 4 per (label, tier)
"""

from __future__ import annotations

import argparse
import json
import random
from collections import defaultdict
from pathlib import Path


def pack(files: list[str], out: Path, seed: int, parts: int = 1) -> int:
    """Shuffle every answer into `parts` packs (pack1.md, ...), each request's answers in one pack, so one
    judge sees all the tiers' answers to a request; key.jsonl maps the ids back."""
    rows = [json.loads(line) for f in files for line in open(f, encoding="utf-8") if line.strip()]
    rng = random.Random(seed)
    requests = sorted({r["request"] for r in rows})
    rng.shuffle(requests)
    part_of = {q: i % parts for i, q in enumerate(requests)}
    rng.shuffle(rows)
    out.mkdir(parents=True, exist_ok=True)
    packs = [[r for r in rows if part_of[r["request"]] == p] for p in range(parts)]
    n = 0
    with open(out / "key.jsonl", "w", encoding="utf-8") as key:
        for p, pack_rows in enumerate(packs, 1):
            with open(out / f"pack{p}.md", "w", encoding="utf-8") as md:
                md.write(f"# {len(pack_rows)} answers to judge\n\nScore each answer on its own, 1-5, by JUDGING.md.\n")
                for r in pack_rows:
                    n += 1
                    aid = f"A{n:03d}"
                    key.write(json.dumps({"id": aid, "label": r.get("label", ""), "tier": r["tier"], "i": r.get("i"),
                                          "finish_reason": r.get("finish_reason"), "pack": p},
                                         ensure_ascii=False) + "\n")
                    md.write(f"\n## {aid}\n\n### Request\n\n````\n{r['request']}\n````\n\n### Answer\n\n"
                             f"````\n{r['answer']}\n````\n")
    return n


def score(folder: Path, scores_file: str) -> dict:
    key = {r["id"]: r for r in map(json.loads, open(folder / "key.jsonl", encoding="utf-8"))}
    groups: dict[str, list[int]] = defaultdict(list)
    missing = set(key)
    for line in (ln for f in scores_file.split(",") for ln in open(f, encoding="utf-8")):
        if not line.strip():
            continue
        s = json.loads(line)
        k = key[s["id"]]
        missing.discard(s["id"])
        groups[f"{k['label']}:{k['tier']}".lstrip(":")].append(int(s["score"]))
    out = {}
    for g, v in sorted(groups.items()):
        out[g] = {"n": len(v), "counts": {str(c): v.count(c) for c in range(1, 6)},
                  "mean": round(sum(v) / len(v), 2), "share_ge4": round(sum(x >= 4 for x in v) / len(v), 3)}
    return {"groups": out, "unscored": sorted(missing)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="blind judging packs")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("files", nargs="+")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--parts", type=int, default=1, help="split into this many packs (one judge each)")
    s = sub.add_parser("score")
    s.add_argument("folder")
    s.add_argument("scores", help="the judges' JSONL files, comma-separated")
    s.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    if a.cmd == "pack":
        print(f"{pack(a.files, Path(a.out), a.seed, a.parts)} answers packed in {a.out}")
        return 0
    res = score(Path(a.folder), a.scores)
    if a.json:
        print(json.dumps(res))
        return 0
    print(f"{'group':28} {'n':>3} {'1':>3} {'2':>3} {'3':>3} {'4':>3} {'5':>3} {'mean':>5} {'>=4':>6}")
    for g, r in res["groups"].items():
        c = r["counts"]
        print(f"{g:28} {r['n']:>3} {c['1']:>3} {c['2']:>3} {c['3']:>3} {c['4']:>3} {c['5']:>3} "
              f"{r['mean']:>5.2f} {r['share_ge4']:>6.1%}")
    if res["unscored"]:
        print(f"unscored: {len(res['unscored'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
