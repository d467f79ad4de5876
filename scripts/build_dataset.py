"""Build data/pet_examples.jsonl from its sources: the first curated examples plus the reviewed
batches in data/batches/*.jsonl.

    python scripts/build_dataset.py [--check]

- every row is validated with pet.dataset (row and field named on failure; nothing is written then);
- exact and near-duplicate requests are dropped (word-set Jaccard >= 0.7 on the first user turn),
  and so is any request too close (>= 0.6) to a request in bench/fresh_requests.jsonl (the final
  judge's) or bench/dev_requests.jsonl (for tuning decoding), which must never be trained on;
- the held-out split is fixed per example: a source row's own `split` is kept (the first 1,098 examples
  carry the split chosen when they were written: about 11% of each domain, by the stable hash of the
  request); a row without one gets PET's default rule (`pet.dataset.is_heldout`: 1 request in 10, by the
  same hash). So adding or removing a batch never moves an example between train and held-out.
`--check` rebuilds in memory and fails if data/pet_examples.jsonl differs.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pet import dataset  # noqa: E402

SOURCES = ROOT / "data" / "batches"
OUT = ROOT / "data" / "pet_examples.jsonl"
HELD_APART = (ROOT / "bench" / "fresh_requests.jsonl", ROOT / "bench" / "dev_requests.jsonl")
NEAR_FRESH = 0.6  # benchmark requests are kept far away from training
NEAR_DUP = 0.7

_WORDS = re.compile(r"\w+")


def words(text: str) -> frozenset[str]:
    return frozenset(w for w in _WORDS.findall(text.lower()) if len(w) > 2)


def jaccard(a: frozenset, b: frozenset) -> float:
    return len(a & b) / len(a | b) if a and b else 0.0


def load_sources() -> list[dict]:
    rows = []
    for f in sorted(SOURCES.glob("*.jsonl")):
        for n, line in enumerate(open(f, encoding="utf-8"), 1):
            if line.strip():
                ex = json.loads(line)
                ex["_src"] = f"{f.name}:{n}"
                rows.append(ex)
    return rows


def build() -> tuple[list[dict], list[str]]:
    notes: list[str] = []
    rows = load_sources()
    problems = [f"{r['_src']}: {p.field}: {p.message}" for r in rows
                for p in dataset.validate_example({k: v for k, v in r.items() if k != "_src"}, 0)]
    if problems:
        raise SystemExit("bad source rows:\n" + "\n".join(problems))
    fresh = [words(json.loads(line)["request"]) for f in HELD_APART for line in open(f, encoding="utf-8")
             if line.strip()]
    kept: list[dict] = []
    seen: list[frozenset] = []
    for r in rows:
        w = words(dataset.first_user(r))
        near_fresh = max((jaccard(w, f) for f in fresh), default=0)
        if near_fresh >= NEAR_FRESH:
            notes.append(f"dropped {r['_src']}: too close to a benchmark request ({near_fresh:.2f})")
            continue
        dup = next((i for i, s in enumerate(seen) if jaccard(w, s) >= NEAR_DUP), None)
        if dup is not None:
            notes.append(f"dropped {r['_src']}: near-duplicate of {kept[dup]['_src']}")
            continue
        kept.append(r)
        seen.append(w)
    for r in kept:
        if r.get("split") not in dataset.SPLITS:
            r["split"] = "heldout" if dataset.is_heldout(r) else "train"
    out = [dataset.normalise({k: v for k, v in r.items() if k != "_src"}) for r in kept]
    return out, notes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args(argv)
    rows, notes = build()
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if a.check:
        same = OUT.read_text(encoding="utf-8") == text
        print("data/pet_examples.jsonl is up to date" if same else "data/pet_examples.jsonl differs: rebuild it")
        return 0 if same else 1
    tmp = OUT.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(OUT)
    held = sum(r["split"] == "heldout" for r in rows)
    for n in notes:
        print(n)
    print(f"{len(rows)} examples ({held} held out) written to {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
