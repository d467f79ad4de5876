"""The Data tab's table at 10,000 rows: a searched, tag-filtered page and the last page.

    python bench/data_paging.py [--rows 10000] [--runs 20]

Prints the median time of dv.table_page (search + tag filter + one page, and a jump to the last page)
against a baseline measured in the same run: one plain pass over the rows that lower-cases and
searches every example's text (what a table without an index would do on every view). Goal: the page
under 0.5 s at 10,000 rows (it used to be a timed assert in tests/test_dataview.py).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def example(i: int) -> dict:
    return {"messages": [{"role": "user", "content": f"request {i} about {'sql' if i % 10 == 0 else 'poems'}"},
                         {"role": "assistant", "content": f"You are an expert. Improved prompt {i}."}],
            "domain": "technical" if i % 10 == 0 else "creative", "techniques": ["role"]}


def timed(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=20)
    a = ap.parse_args()

    from pet import dataview as dv
    from pet.dataset import Lengths

    rows = [example(i) for i in range(a.rows)]
    idx = dv.Index(7, rows)
    lengths = Lengths()

    def pet_pages():
        dv.table_page(idx, "SQL", "domain: technical", 3, lengths)
        dv.table_page(idx, "", dv.ALL_TAGS, a.rows)

    def baseline():
        [e for e in rows if "sql" in "\n".join(m["content"] for m in e["messages"]).lower()]

    pet_s, base_s = timed(pet_pages, a.runs), timed(baseline, a.runs)
    print(f"{a.rows} rows: PET page {pet_s * 1000:.1f} ms, plain scan {base_s * 1000:.1f} ms, "
          f"ratio {pet_s / base_s:.2f} (goal: page < 500 ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
