"""Background training jobs: start, watch, cancel and reattach a trainer subprocess via its run folder.

The child (`python -m pet train --out RUN_DIR ...`) writes status.json and metrics.jsonl; everything
here reads those files, so a page reload, a second tab or an app restart finds the job again.
A job whose process is gone while its status still says running shows as interrupted.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

from pet import PetError
from pet.config import PARAM_TYPES, REPO_ROOT, TIER_NAME_RULE, ThreadBudget, valid_tier_name
from pet.files import write_atomic
from pet.train import checkpoint
from pet.train.trainer import TrainConfig, new_run_id, write_json

LIVE = ("starting", "running")
RESUMABLE = ("interrupted", "cancelled", "failed")
CANCEL_FILE = "cancel_requested"
_children: dict[int, subprocess.Popen] = {}  # reaped on every look, so a finished child is no zombie


class JobRunning(PetError):
    def __init__(self, run_id: str, limit: int = 1):
        self.run_id = run_id
        at_a_time = "one job at a time" if limit == 1 else f"{limit} jobs at a time"
        super().__init__(f"training job {run_id} is still running: {at_a_time} (PET_MAX_JOBS={limit}). "
                         "Wait for it to finish or cancel it first, or raise PET_MAX_JOBS if the machine "
                         "has the cores and memory for more.")


def runs_dir(home: Path) -> Path:
    p = Path(home) / "runs"
    p.mkdir(parents=True, exist_ok=True)
    return p


_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def run_path(home: Path, run_id: str) -> Path:
    """The folder of run `run_id`, refusing ids that would point elsewhere (`../x`, `/etc`, `a/b`)."""
    rid = str(run_id or "").strip()
    if not _RUN_ID.fullmatch(rid) or ".." in rid:
        raise PetError(f"run id {rid[:120]!r} is not a run id: use the id shown in the run history "
                       "(letters, digits, '-', '_' and '.', e.g. 20250101-120000-ab12)")
    return runs_dir(home) / rid


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
    live = state in LIVE
    ok, why = checkpoint.resumable(run_dir) if state in RESUMABLE else (False, "")
    return {"id": run_dir.name, "dir": str(run_dir), "state": state, "pid": status.get("pid"),
            "error": status.get("error"), "started": status.get("started"),
            "step": max(last.get("step", 0), status.get("step") or 0) if live else last.get("step", 0),
            "total_steps": status.get("total_steps"),
            # status.json is rewritten during evaluations too, so its ETA is the fresher one
            "eta_s": (status.get("eta_s") if status.get("eta_s") is not None else last.get("eta_s")) if live else None,
            "phase": status.get("phase") if live else None, "phase_detail": status.get("phase_detail") if live else None,
            "phase_done": status.get("phase_done") if live else None,
            "phase_total": status.get("phase_total") if live else None,
            "tokens_per_s": last.get("tokens_per_s"), "metrics": metrics, "final": final,
            "config": _read_json(run_dir / "config.json"),
            "checkpoint_step": checkpoint.step_of(run_dir), "resumable": ok, "not_resumable": why or None,
            "adapter": str(run_dir / "adapter") if (run_dir / "adapter" / "pet_adapter.json").exists() else None,
            "model": str(run_dir / "model") if (run_dir / "model" / "config.json").exists() else None,
            "gguf": str(run_dir / "model.gguf") if (run_dir / "model.gguf").exists() else None}


def run_ids(home: Path) -> list[str]:
    """Every run's id (a folder with a status.json), newest first."""
    return sorted((d.name for d in runs_dir(home).iterdir() if (d / "status.json").exists()), reverse=True)


def list_runs(home: Path) -> list[dict]:
    return [info(runs_dir(home) / rid) for rid in run_ids(home)]


def live_ids(home: Path) -> list[str]:
    """Ids of the running jobs, newest first (reads only their status files: cheap enough per request)."""
    out = []
    for d in sorted(runs_dir(home).iterdir(), reverse=True):
        st = _read_json(d / "status.json")
        if st.get("state") in LIVE and _alive(st.get("pid")):
            out.append(d.name)
    return out


def active(home: Path) -> dict | None:
    """The running job, if any: what a reloaded page or a restarted app reattaches to."""
    ids = live_ids(home)
    return info(runs_dir(home) / ids[0]) if ids else None


def shown_run(home: Path, run_id: str | None) -> dict | None:
    """The run a page shows: the running job unless another run is asked for, else the run asked for if it
    exists, else the newest run (None when there is none)."""
    cur = active(home)
    if cur and (run_id is None or run_id == cur["id"]):
        return cur
    ids = run_ids(home)
    if run_id and run_id in ids:
        return info(runs_dir(home) / run_id)
    return cur or (info(runs_dir(home) / ids[0]) if ids else None)


HISTORY_COLUMNS = ["run", "state", "source", "steps", "held-out before", "held-out after"]


def history_rows(runs: list[dict]) -> list[list]:
    """The run history's rows (HISTORY_COLUMNS) from list_runs(); a missing value is an empty cell."""
    out = []
    for r in runs:
        f = r.get("final") or {}
        src = (r.get("config") or {}).get("resolved", {}).get("source", "")
        row = [r["id"], r["state"], src, r.get("step"),
               None if f.get("eval_loss_before") is None else round(f["eval_loss_before"], 4),
               None if f.get("eval_loss_after") is None else round(f["eval_loss_after"], 4)]
        out.append(["" if c is None else c for c in row])
    return out


def measured_run(home: Path, tier: str) -> dict | None:
    """final_eval.json of the newest run on `tier` that measured its training speed: what estimate() uses."""
    for r in list_runs(home):
        if (r.get("config") or {}).get("tier") == tier and (r.get("final") or {}).get("train_tokens_per_s"):
            return r["final"]
    return None


def child_env(home: Path, train_threads: int, tiers_path: Path | None = None) -> dict:
    """The training child's environment: its share of the CPU for torch and every BLAS/OpenMP pool,
    so it and the app's models together use the machine's cores, not twice as many."""
    n = str(max(1, int(train_threads)))
    env = dict(os.environ, PET_HOME=str(home), PET_TRAIN_QUIET="1", PYTHONUNBUFFERED="1", PET_TRAIN_THREADS=n,
               OMP_NUM_THREADS=n, MKL_NUM_THREADS=n, OPENBLAS_NUM_THREADS=n, NUMEXPR_NUM_THREADS=n,
               VECLIB_MAXIMUM_THREADS=n)
    if tiers_path:
        env["PET_TIERS"] = str(tiers_path)
    return env


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


def start(home: Path, cfg: TrainConfig, tiers_path: Path | None = None, examples: list[dict] | None = None,
          threads: ThreadBudget | None = None) -> str:
    """Start a job in the background; return its run id. Past `threads.max_jobs` running jobs
    (PET_MAX_JOBS, default 1) a start is refused. The child gets `threads.train` threads."""
    cfg.check()
    threads = threads or ThreadBudget.from_env()
    runs = runs_dir(home)
    with open(runs / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two tabs pressing Start together still get one job
        live = live_ids(home)
        if len(live) >= threads.max_jobs:
            raise JobRunning(live[0], threads.max_jobs)
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
        proc = _spawn(run_dir, cmd, child_env(home, threads.train, tiers_path))
        if not (run_dir / "status.json").exists():
            write_json(run_dir / "status.json", {"state": "starting", "pid": proc.pid, "started": time.time(),
                                                 "command": cmd})
    return run_id


def _spawn(run_dir: Path, cmd: list[str], env: dict) -> subprocess.Popen:
    # stderr (warnings, a native crash) goes to the same train.log the child writes its lines to.
    err = open(run_dir / "train.log", "ab")
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=err, start_new_session=True)  # survives an app restart
    err.close()
    _children[proc.pid] = proc
    return proc


def resume(home: Path, run_id: str, tiers_path: Path | None = None, threads: ThreadBudget | None = None) -> str:
    """Continue an interrupted (or cancelled, or failed) run from its last checkpoint, in the background,
    under the same job limit and CPU share as `start`."""
    threads = threads or ThreadBudget.from_env()
    runs = runs_dir(home)
    run_dir = run_path(home, run_id)
    if not run_dir.is_dir():
        raise PetError(f"no training run {run_id!r} in {runs}")
    with open(runs / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        live = live_ids(home)
        if run_dir.name in live:
            raise PetError(f"run {run_dir.name} is still running: nothing to resume")
        if len(live) >= threads.max_jobs:
            raise JobRunning(live[0], threads.max_jobs)
        ok, why = checkpoint.resumable(run_dir)
        if not ok:
            raise PetError(why)
        (run_dir / CANCEL_FILE).unlink(missing_ok=True)
        proc = _spawn(run_dir, [sys.executable, "-m", "pet", "train", "--resume", str(run_dir)],
                      child_env(home, threads.train, tiers_path))
        st = _read_json(run_dir / "status.json")
        st.update(state="starting", pid=proc.pid, error=None, phase="loading", phase_detail="resuming")
        write_json(run_dir / "status.json", st)
    return run_id


def cancel(home: Path, run_id: str, wait_s: float = 0.0) -> dict:
    """Ask the trainer to stop (SIGTERM): it saves the adapter it has and marks the run cancelled."""
    run_dir = run_path(home, run_id)
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


# -- using a finished run's adapter ------------------------------------------------------------------
def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v), ensure_ascii=False)  # a JSON string is a valid TOML basic string


def save_overlay_tier(overlay: Path, spec) -> None:
    """Write (or replace) one tier in PET_HOME/tiers.local.toml, atomically, keeping the others.

    Read-modify-write under an exclusive lock: two clicks (or the app and the CLI) saving tiers at the
    same time would otherwise each write the file they read, and one tier would be lost."""
    overlay.parent.mkdir(parents=True, exist_ok=True)
    with open(overlay.with_name(overlay.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _save_overlay_tier(overlay, spec)


def _save_overlay_tier(overlay: Path, spec) -> None:
    import tomllib

    tables = {}
    if overlay.exists():
        tables = tomllib.loads(overlay.read_text(encoding="utf-8")).get("tiers", {})
    entry = {"backend": spec.backend, "model": spec.model, "system_prompt": spec.system_prompt,
             "adapter": spec.adapter, "template": spec.template, "description": spec.description, "host": spec.host,
             "languages": list(spec.languages) or None,
             "params": {k: v for k, v in spec.params.as_dict().items() if v is not None and k in PARAM_TYPES}}
    tables[spec.name] = {k: v for k, v in entry.items() if v not in (None, "")}
    lines = ["# Tiers saved by PET Studio (a fine-tuned adapter made a tier). Each table replaces or adds",
             "# the tier of that name in the tiers file. Delete a table to go back to the file's version.", ""]
    for name, t in tables.items():
        lines.append(f"[tiers.{name}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in t.items() if k != "params"]
        if t.get("params"):
            lines.append(f"[tiers.{name}.params]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in t["params"].items()]
        lines.append("")
    write_atomic(overlay, "\n".join(lines))  # a unique temp file: threads and processes never share one


def use_adapter(engine, run_id: str, target: str = "enhanced", new_name: str | None = None):
    """Put a finished run's adapter on a tier: hot-swapped now and saved so a restart keeps it.

    target: the tier that gets the adapter (its backend, model and params stay); with new_name, a new
    tier is added as a copy of target with the adapter, so both can be compared.
    """
    from dataclasses import replace

    from pet import models
    from pet.adapters import base_identity, check_base, read_adapter
    from pet.config import OVERLAY_FILE

    run = info(run_path(engine.settings.home, run_id))
    if run["state"] not in ("finished", "cancelled") or not run["adapter"]:
        raise PetError(f"run {run_id} is {run['state']} and has no finished adapter to use")
    if (run["final"] or {}).get("adapter_is_start"):
        raise PetError(f"run {run_id}: {run['final'].get('note') or 'no evaluation beat the starting point'}; "
                       "its adapter is not offered as an upgrade")
    adapter = read_adapter(run["adapter"])
    spec = engine.tiers.spec(target)
    if spec.backend in ("ollama", "openai"):
        raise PetError(f"tier {target!r} runs on a model server ({spec.backend}), which PET cannot give a LoRA "
                       "adapter: choose a llama.cpp or hf tier")
    ref = models.resolve(spec.model, spec.backend, engine.settings.path("models"))
    check_base(adapter, base_identity(ref.ref, ref.path))
    name = new_name or target
    if new_name:
        if not valid_tier_name(new_name):
            raise PetError(f"tier name {new_name!r}: {TIER_NAME_RULE}")
        if new_name in engine.tiers.names():
            raise PetError(f"a tier named {new_name!r} exists already; choose another name")
    meta = adapter.meta
    before, after = meta.get("eval_loss_before"), meta.get("eval_loss_after")
    loss = "no held-out loss" if before is None or after is None else f"held-out loss {before:.3f} -> {after:.3f}"
    desc = f"{spec.description.split(' [adapter')[0]} [adapter {run_id}: {loss}]"
    new = replace(spec, name=name, adapter=str(adapter.path), description=desc,
                  system_prompt=adapter.meta.get("system_prompt", spec.system_prompt))
    engine.tiers.put(new)
    save_overlay_tier(engine.settings.home / OVERLAY_FILE, new)
    return new


# -- before starting: how long and how much memory -----------------------------------------------------
DEFAULT_TOKENS_PER_S = {"bf16": 130.0, "fp32": 65.0}  # Gemma 3 270M LoRA, batch 1, on this project's 2-core CPU


def estimate(examples: list[dict], cfg: TrainConfig, params_m: float = 270.0, system_chars: int = 0,
             measured_tokens_per_s: float | None = None, measured: dict | None = None) -> dict:
    """A rough time and memory estimate from the data size and settings (about 4 characters a token).

    measured: a finished run's final_eval.json on the same tier; its training and evaluation speeds and
    its loading time replace the typical figures (evaluation and loading dominate short runs).
    """
    measured = measured or {}
    measured_tokens_per_s = measured_tokens_per_s or measured.get("train_tokens_per_s")
    import math

    from pet import dataset
    from pet.train.trainer import cpu_supports_bf16

    train, held = dataset.split(examples)
    chars = [sum(len(m.get("content", "")) for m in e["messages"]) + system_chars + 60 for e in train]
    tokens = [min(cfg.max_seq_len, c // 4) for c in chars] or [0]
    steps = cfg.total_steps(len(train))
    train_tokens = steps * cfg.batch_size * cfg.grad_accum * (sum(tokens) / len(tokens))
    precision = "bf16" if cfg.precision == "bf16" or (cfg.precision == "auto" and cpu_supports_bf16()) else "fp32"
    rate = measured_tokens_per_s or DEFAULT_TOKENS_PER_S[precision] * 270.0 / max(params_m, 1.0)
    eval_tokens = (sum(tokens) / len(tokens)) * len(held) * (math.ceil(steps / cfg.eval_interval(steps)) + 1)
    # Without a measured evaluation speed: a forward pass costs about a third of a training step.
    eval_rate = measured.get("eval_tokens_per_s") or rate * 3
    seconds = measured.get("load_seconds", 20.0) + train_tokens / rate + eval_tokens / eval_rate
    weight_gb = params_m * 1e6 * (2 if precision == "bf16" else 4) / 1e9
    # Activations kept for backward grow with batch x sequence; the logits exist only at label positions.
    act_gb = cfg.batch_size * max(tokens) * params_m * 1e6 / 1e9 * 0.02
    mem_gb = 1.2 + weight_gb * 1.2 + act_gb  # + Python, torch and the tokenizer
    return {"train_examples": len(train), "heldout_examples": len(held), "steps": steps,
            "tokens": int(train_tokens), "seconds": seconds, "memory_gb": mem_gb, "precision": precision,
            "tokens_per_s": rate, "measured": measured_tokens_per_s is not None}
