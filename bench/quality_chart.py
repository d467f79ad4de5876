"""Write a stored benchmark run as a PNG chart and print its Markdown tables (for the README).

    python -m pet bench --quick --tiers light,enhanced,base     # stores a run, prints its id
    python bench/quality_chart.py [RUN_ID] [--out docs/bench_quick.png]

RUN_ID defaults to the newest run. The PNG is the Benchmark tab's chart, written by plotly's kaleido,
which drives a local Chromium (set BROWSER_PATH=/usr/bin/chromium if it is not found on its own).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pet import PetError, benchmark, benchplot  # noqa: E402
from pet.engine import Engine  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_id", nargs="?", help="a stored run (default: the newest)")
    ap.add_argument("--out", default="docs/bench_quick.png", help="PNG file to write")
    args = ap.parse_args()
    eng = Engine()
    try:
        run_id = args.run_id or next(iter(benchmark.runs(eng.store, 1)), {}).get("run_id")
        if not run_id:
            raise PetError("no benchmark runs yet: run `python -m pet bench --quick` first")
        run = benchmark.get_run(eng.store, run_id)
    except PetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if Path("/usr/bin/chromium").exists():
        os.environ.setdefault("BROWSER_PATH", "/usr/bin/chromium")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    benchplot.tier_figure(run).write_image(str(out), width=1000, height=420, scale=1)
    print(f"run {run['run_id']}: {run['n_prompts']} prompts ({run['source']}), {run['elapsed_s']:.0f} s; chart: {out}\n")
    print(benchmark.tier_table(run))
    print()
    print(benchmark.comparison_table(run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
