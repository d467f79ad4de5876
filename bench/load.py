"""Load: N people chatting at once through the Gradio API (issue 13, item 2).

    python bench/load.py [--url URL] [--sessions 16] [--tier light] [--max-tokens 64]

Without --url it starts `python app.py` on a free port (PET_HOME: a temporary folder sharing the
usual model caches) and stops it at the end. N sessions (gradio_client, one Client each, as N
browsers) send one chat request each, all at once. Reported: throughput (generated tokens per second
of wall time, all sessions together), time to first token p50/p95 (from submit to the first streamed
piece of the answer, queueing included), the largest queue position a waiting session was shown,
errors, and how long another tab's call (the Benchmark tab's prompt score) takes under the load against idle,
measured in the same run. Goal: 16 sessions, 0 errors, the other tab's call not held up by the chat
queue (ratio near 1).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PROMPTS = ["write a poem about autumn", "help me write a cover letter for a data analyst job",
           "i need sql to find customers who havent ordered in 90 days", "explain kubernetes to my manager",
           "summarize this article", "plan a week of vegetarian dinners"]


def start_app() -> tuple[subprocess.Popen, str]:
    import socket

    from pet.config import Settings

    base = Settings.from_env()
    home = Path(tempfile.mkdtemp(prefix="pet-bench-load-"))
    for sub in ("models", "cache"):  # no re-conversion of the model files
        (home / sub).symlink_to(base.path(sub), target_is_directory=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PET_HOME=str(home), PET_PORT=str(port), PET_HOST="127.0.0.1",
               GRADIO_ANALYTICS_ENABLED="False")
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=open(home / "app.log", "w"))
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 600  # a busy machine can take minutes to import everything
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"the app did not start: {(home / 'app.log').read_text()[-2000:]}")


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def one_session(url: str, i: int, tier: str, max_tokens: int, jobs: list, out: list, go: threading.Event) -> None:
    from gradio_client import Client

    rec = {"session": i, "error": None, "ttft_s": None, "total_s": None, "tokens": 0}
    try:
        client = Client(url, verbose=False)
        go.wait()
        t0 = time.perf_counter()
        job = client.submit(tier_name=tier, message=PROMPTS[i % len(PROMPTS)], mx=max_tokens, sd=i, api_name="/chat")
        jobs.append(job)
        for conversation, _, stats in job:
            if rec["ttft_s"] is None and conversation and conversation[-1]["role"] == "assistant":
                text = conversation[-1]["content"]
                text = text[0]["text"] if isinstance(text, list) else text
                if text.strip() not in ("", "…"):
                    rec["ttft_s"] = time.perf_counter() - t0
        rec["total_s"] = time.perf_counter() - t0
        m = re.search(r"(\d+) tokens", job.outputs()[-1][2] or "")
        rec["tokens"] = int(m.group(1)) if m else 0
        if not m:
            rec["error"] = f"no final stats line: {job.outputs()[-1][2]!r}"
    except Exception as e:  # every failure is counted and reported, not raised
        rec["error"] = f"{type(e).__name__}: {e}"
    out.append(rec)


def other_tab_call(url: str) -> float:
    from gradio_client import Client

    client = Client(url, verbose=False)
    t0 = time.perf_counter()
    # /score (the Benchmark tab's "Score my prompt": no model) is public; the Arena's events are private.
    client.predict("You are a poet. Write a haiku about rain.", "", api_name="/score")
    return time.perf_counter() - t0


def watch(threads: list[threading.Thread], jobs: list, url: str) -> tuple[list[int], list[float]]:
    """While the sessions run: the queue positions Gradio shows them, and another tab's call time (3 samples)."""
    positions, under_load = [], []
    while any(t.is_alive() for t in threads):
        for job in list(jobs):
            try:
                st = job.status()
                if st.rank is not None and st.rank >= 0:
                    positions.append(st.rank + 1)
            except Exception:  # a finished job may not answer a status call
                pass
        if len(under_load) < 3:
            under_load.append(other_tab_call(url))
        time.sleep(0.5)
    return positions, under_load


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", help="a running PET Studio (default: start one)")
    ap.add_argument("--sessions", type=int, default=16)
    ap.add_argument("--tier", default="light")
    ap.add_argument("--max-tokens", type=int, default=64)
    a = ap.parse_args()
    if a.max_tokens < 16:
        ap.error("--max-tokens: the chat's slider starts at 16")
    proc, url = (None, a.url) if a.url else start_app()
    try:
        from gradio_client import Client

        warm = Client(url, verbose=False)  # load the model once: a cold start is not what this measures
        warm.predict(tier_name=a.tier, message="hi", mx=16, sd=0, api_name="/chat")
        idle = statistics.median(other_tab_call(url) for _ in range(3))

        jobs, results, go = [], [], threading.Event()
        threads = [threading.Thread(target=one_session, args=(url, i, a.tier, a.max_tokens, jobs, results, go),
                                    daemon=True) for i in range(a.sessions)]  # daemon: a dead app ends the run
        for t in threads:
            t.start()
        time.sleep(2.0)  # every client connected before the start
        t0 = time.perf_counter()
        go.set()
        time.sleep(0.5)
        positions, under_load = watch(threads, jobs, url)
        wall = time.perf_counter() - t0
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(20)
    ok = [r for r in results if not r["error"]]
    errors = [r for r in results if r["error"]]
    ttft = [r["ttft_s"] for r in ok if r["ttft_s"] is not None]
    tokens = sum(r["tokens"] for r in ok)
    loaded = statistics.median(under_load) if under_load else float("nan")
    res = {"sessions": a.sessions, "tier": a.tier, "max_tokens": a.max_tokens, "errors": len(errors),
           "throughput_tok_s": round(tokens / wall, 1), "wall_s": round(wall, 1),
           "ttft_p50_s": round(pct(ttft, 0.5), 2) if ttft else None,
           "ttft_p95_s": round(pct(ttft, 0.95), 2) if ttft else None,
           "max_queue_position_shown": max(positions) if positions else None,
           "other_tab_idle_s": round(idle, 3), "other_tab_under_load_s": round(loaded, 3),
           "other_tab_ratio": round(loaded / idle, 2) if idle else None,
           "error_samples": [r["error"] for r in errors[:3]]}
    print(f"{a.sessions} sessions on {a.tier}: {len(errors)} errors, {res['throughput_tok_s']} tokens/s together, "
          f"TTFT p50 {res['ttft_p50_s']} s, p95 {res['ttft_p95_s']} s, queue positions shown up to "
          f"{res['max_queue_position_shown']}; another tab's call {res['other_tab_under_load_s']} s under load vs "
          f"{res['other_tab_idle_s']} s idle ({res['other_tab_ratio']}x)")
    print(json.dumps(res))
    return 0 if not errors else 1


if __name__ == "__main__":
    raise SystemExit(main())
