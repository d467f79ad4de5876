"""Checkpoints: what a killed run needs to go on exactly where it stopped.

`RUN/checkpoint/` holds the trainable weights in fp32 (the LoRA, or every trained weight of a full
run), the optimizer and scheduler states, the random states (the epoch's batch order and dropout),
the step and the position in the epoch, and the evaluation history that keep-best and early stopping
use. It is written at each evaluation, every --save-every steps and on cancel, to a temporary
folder swapped in whole (pet/files.py), so a kill at any moment leaves the previous checkpoint intact.

No pickle (PET loads nothing through it): the rest of the state is JSON (state.json) whose tensors
(optimizer moments, torch's random state) sit in state.safetensors, referenced by key.
"""

from __future__ import annotations

import json
from pathlib import Path

from pet import PetError
from pet.files import atomic_folder

FOLDER = "checkpoint"


def save(run_path: Path, weights: dict, best: dict | None, state: dict) -> None:
    import torch
    from safetensors.torch import save_file

    with atomic_folder(run_path / FOLDER) as tmp:
        save_file({k: v.detach().float().contiguous().cpu() for k, v in weights.items()},
                  str(tmp / "weights.safetensors"))
        if best:
            save_file({k: v.float().contiguous().cpu() for k, v in best.items()}, str(tmp / "best.safetensors"))
        tensors: dict = {}
        (tmp / "state.json").write_text(json.dumps(_pack(state, tensors, torch)), encoding="utf-8")
        save_file(tensors, str(tmp / "state.safetensors"))
        (tmp / "step").write_text(str(state["step"]))  # readable without torch (the UI)


def load(run_path: Path) -> tuple[dict, dict | None, dict]:
    from safetensors.torch import load_file

    folder = run_path / FOLDER
    weights = load_file(str(folder / "weights.safetensors"))
    best = load_file(str(folder / "best.safetensors")) if (folder / "best.safetensors").exists() else None
    if not (folder / "state.json").exists():
        raise PetError(f"--resume: the checkpoint in {folder} is from an earlier PET version (no state.json); "
                       "start the run again")
    tensors = load_file(str(folder / "state.safetensors"))
    state = _unpack(json.loads((folder / "state.json").read_text(encoding="utf-8")), tensors)
    return weights, best, state


def _pack(obj, tensors: dict, torch):
    """JSON for `obj`, keeping what JSON would lose: tensors (stored apart), tuples, non-string keys."""
    if torch.is_tensor(obj):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().cpu().clone().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, tuple):
        return {"__tuple__": [_pack(x, tensors, torch) for x in obj]}
    if isinstance(obj, list):
        return [_pack(x, tensors, torch) for x in obj]
    if isinstance(obj, dict):
        return {"__dict__": [[_pack(k, tensors, torch), _pack(v, tensors, torch)] for k, v in obj.items()]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"checkpoint state: cannot store a {type(obj).__name__}")


def _unpack(obj, tensors: dict):
    if isinstance(obj, list):
        return [_unpack(x, tensors) for x in obj]
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__tuple__" in obj:
            return tuple(_unpack(x, tensors) for x in obj["__tuple__"])
        return {_unpack(k, tensors): _unpack(v, tensors) for k, v in obj["__dict__"]}
    return obj


def step_of(run_path: Path) -> int | None:
    try:
        return int((Path(run_path) / FOLDER / "step").read_text())
    except (OSError, ValueError):
        return None


def resumable(run_path: Path) -> tuple[bool, str]:
    """Whether `pet train --resume` can continue this run, and if not, why."""
    run_path = Path(run_path)
    try:
        status = json.loads((run_path / "status.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False, f"{run_path} is not a training run (no readable status.json)"
    if status.get("state") == "finished":
        return False, f"run {run_path.name} has finished: nothing to resume"
    if step_of(run_path) is None:
        return False, (f"run {run_path.name} has no checkpoint (it stopped before its first evaluation or "
                       "--save-every step): start it again instead")
    if not (run_path / "config.json").exists():
        return False, f"run {run_path.name} has no config.json"
    return True, ""


def find_run(ref: str, runs_dir: Path, flag: str = "--resume") -> Path:
    """A run given by its id (under PET_HOME/runs) or its folder."""
    p = Path(ref).expanduser()
    if p.is_dir():
        return p
    if ref and (runs_dir / ref).is_dir():
        return runs_dir / ref
    raise PetError(f"{flag}: no run {ref!r} (give a run id from {runs_dir} or a run folder)")


def check_resumable(run_path: Path) -> None:
    ok, why = resumable(run_path)
    if not ok:
        raise PetError(f"--resume: {why}")
