"""How long `python app.py` takes to serve the page (goal < 10 s), before any model loads.

Runs the start a few times in a fresh PET_HOME each and prints each time and the median,
plus, as a baseline in the same command, how long a bare `python -c "import gradio"` takes.

    python bench/startup.py [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.conftest import make_home, start_app, stop_app  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import gradio"], check=True)
    bare = time.perf_counter() - t0
    times = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as d:
            home = make_home(Path(d) / "home")
            t0 = time.perf_counter()
            proc, _url = start_app(home, timeout=60)
            times.append(time.perf_counter() - t0)
            stop_app(proc)
    print("page up after: " + ", ".join(f"{t:.1f} s" for t in times))
    print(f"median {statistics.median(times):.1f} s (goal < 10 s); `import gradio` alone: {bare:.1f} s; "
          f"ratio {statistics.median(times) / bare:.2f}")


if __name__ == "__main__":
    main()
