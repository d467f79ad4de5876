"""Background training jobs: start, watch, cancel and reattach a trainer subprocess via its run folder.

The child (`python -m pet train --out RUN_DIR ...`) writes status.json and metrics.jsonl; everything
here reads those files, so a page reload, a second tab or an app restart finds the job again.
A job whose process is gone while its status still says running shows as interrupted.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

from pet import PetError
from pet.config import REPO_ROOT
from pet.train.trainer import TrainConfig, new_run_id, write_json

LIVE = ("starting", "running")
CANCEL_FILE = "cancel_requested"
_children: dict[int, subprocess.Popen] = {}  # reaped on every look, so a finished child is no zombie


class JobRunning(PetError):
    def __init__(self, run_id: str):
        self.run_id = run_id
        super().__init__(f"training job {run_id} is still running: one job at a time. "
                         "Wait for it to finish or cancel it first.")


def runs_dir(home: Path) -> Path:
    p = Path(home) / "runs"
    p.mkdir(parents=True, exist_ok=True)
    return p


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        _children.pop(pid, None)
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:  # a zombie or a recycled pid running something else is not our trainer
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        return b"train" in cmd
    except OSError:
        return True  # no /proc (macOS): trust kill(0)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def read_metrics(run_dir: Path) -> list[dict]:
    rows = []
    try:
        with open(run_dir / "metrics.jsonl", encoding="utf-8") as f:
            for line in f:
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    pass  # the line being written right now
    except OSError:
        pass
    return rows


def log_tail(run_dir: Path, lines: int = 30) -> str:
    try:
        with open(run_dir / "train.log", "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def info(run_dir: str | Path) -> dict:
    """Everything the UI shows about one run, read from its folder."""
    run_dir = Path(run_dir)
    status = _read_json(run_dir / "status.json")
    state = status.get("state", "unknown")
    if state in LIVE and not _alive(status.get("pid")):
        # Cancelled before the trainer could install its handler: it died of the SIGTERM itself.
        state = "cancelled" if (run_dir / CANCEL_FILE).exists() else "interrupted"
    metrics = read_metrics(run_dir)
    steps = [m for m in metrics if "loss" in m and not m.get("final")]
    last = steps[-1] if steps else {}
    final = _read_json(run_dir / "final_eval.json")
    return {"id": run_dir.name, "dir": str(run_dir), "state": state, "pid": status.get("pid"),
            "error": status.get("error"), "started": status.get("started"), "step": last.get("step", 0),
            "total_steps": status.get("total_steps"), "eta_s": last.get("eta_s"),
            "tokens_per_s": last.get("tokens_per_s"), "metrics": metrics, "final": final,
            "config": _read_json(run_dir / "config.json"),
            "adapter": str(run_dir / "adapter") if (run_dir / "adapter" / "pet_adapter.json").exists() else None}


def list_runs(home: Path) -> list[dict]:
    dirs = [d for d in runs_dir(home).iterdir() if d.is_dir() and (d / "status.json").exists()]
    return [info(d) for d in sorted(dirs, key=lambda d: d.name, reverse=True)]


def active(home: Path) -> dict | None:
    """The running job, if any: what a reloaded page or a restarted app reattaches to."""
    for d in sorted(runs_dir(home).iterdir(), reverse=True):
        st = _read_json(d / "status.json")
        if st.get("state") in LIVE and _alive(st.get("pid")):
            return info(d)
    return None


def command(cfg: TrainConfig, run_dir: Path) -> list[str]:
    """The exact CLI command a job runs (also recorded in the run's config)."""
    cmd = [sys.executable, "-m", "pet", "train", "--out", str(run_dir)]
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        value = getattr(cfg, f.name)
        if f.name == "out" or value is None or (f.name == "tier" and cfg.base):
            continue
        if value == getattr(defaults, f.name) and f.name not in ("tier",):
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            if value:
                cmd.append(flag)
        else:
            cmd += [flag, str(value)]
    return cmd


def start(home: Path, cfg: TrainConfig, tiers_path: Path | None = None, examples: list[dict] | None = None) -> str:
    """Start a job in the background; return its run id. A second start while one runs is refused."""
    cfg.check()
    runs = runs_dir(home)
    with open(runs / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two tabs pressing Start together still get one job
        cur = active(home)
        if cur:
            raise JobRunning(cur["id"])
        run_id = new_run_id()
        run_dir = runs / run_id
        run_dir.mkdir()
        if examples is not None:  # a dataset version from the store: the exact rows, frozen for the child
            data = run_dir / "examples.jsonl"
            with open(data, "w", encoding="utf-8") as f:
                for e in examples:
                    f.write(json.dumps(e, ensure_ascii=False) + "\n")
            cfg = TrainConfig(**{**asdict(cfg), "data": str(data)})
        cmd = command(cfg, run_dir)
        env = dict(os.environ, PET_HOME=str(home), PET_TRAIN_QUIET="1", PYTHONUNBUFFERED="1")
        if tiers_path:
            env["PET_TIERS"] = str(tiers_path)
        # stderr (warnings, a native crash) goes to the same train.log the child writes its lines to.
        err = open(run_dir / "train.log", "ab")
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=err, start_new_session=True)  # survives an app restart
        err.close()
        _children[proc.pid] = proc
        if not (run_dir / "status.json").exists():
            write_json(run_dir / "status.json", {"state": "starting", "pid": proc.pid, "started": time.time(),
                                                 "command": cmd})
    return run_id


def cancel(home: Path, run_id: str, wait_s: float = 0.0) -> dict:
    """Ask the trainer to stop (SIGTERM): it saves the adapter it has and marks the run cancelled."""
    run_dir = runs_dir(home) / run_id
    if not run_dir.is_dir():
        raise PetError(f"no training run {run_id!r} in {runs_dir(home)}")
    cur = info(run_dir)
    if cur["state"] not in LIVE:
        raise PetError(f"run {run_id} is {cur['state']}, not running: nothing to cancel")
    (run_dir / CANCEL_FILE).write_text(str(time.time()))
    try:
        os.kill(cur["pid"], signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and info(run_dir)["state"] in LIVE:
        time.sleep(0.2)
    return info(run_dir)
