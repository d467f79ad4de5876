"""LoRA adapters and the base model they belong to.

An adapter folder holds the PEFT files (adapter_config.json, adapter_model.safetensors),
`pet_adapter.json` (the base model's identity) and, for llama.cpp, `adapter.gguf`.
An adapter refuses to load onto another base, with a message naming both.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from pet import PetError

INFO_FILE = "pet_adapter.json"
GGUF_FILE = "adapter.gguf"

_sha_cache: dict[tuple[str, int, float], str] = {}


def file_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime)
    if key not in _sha_cache:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _sha_cache[key] = h.hexdigest()
    return _sha_cache[key]


def base_identity(model_ref: str, path: Path | None) -> dict:
    """What an adapter records about its base: the reference and, for a file, its SHA-256."""
    ident = {"ref": model_ref}
    if path is not None and path.is_file():
        ident["file"] = path.name
        ident["sha256"] = file_sha256(path)
    return ident


def same_base(a: dict, b: dict) -> bool:
    if a.get("sha256") and b.get("sha256"):
        return a["sha256"] == b["sha256"]
    return a.get("ref") == b.get("ref")


@dataclass(frozen=True)
class AdapterInfo:
    path: Path
    base: dict
    meta: dict

    @property
    def label(self) -> str:
        return self.meta.get("name") or self.path.name


def read_adapter(path: str | Path) -> AdapterInfo:
    p = Path(path)
    info = p / INFO_FILE
    if not p.is_dir():
        raise PetError(f"adapter {p} not found: train one with `python -m pet train` or fix the tier's adapter path")
    if not info.exists():
        raise PetError(f"adapter {p} has no {INFO_FILE}, so its base model is unknown: "
                       "retrain it with `python -m pet train`")
    try:
        meta = json.loads(info.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise PetError(f"adapter {p}: {INFO_FILE} is unreadable ({e})")
    return AdapterInfo(p, meta.get("base", {}), meta)


def check_base(adapter: AdapterInfo, base: dict) -> None:
    if not same_base(adapter.base, base):
        want = adapter.base.get("file") or adapter.base.get("ref", "?")
        got = base.get("file") or base.get("ref", "?")
        raise PetError(f"adapter {adapter.path.name} was trained on {want}, but this tier's model is {got}: "
                       "point the tier at the adapter's base model, or train an adapter for this one")


def gguf_adapter(adapter: AdapterInfo) -> Path:
    """The llama.cpp form of the adapter, written from the PEFT files on first use."""
    target = adapter.path / GGUF_FILE
    if target.exists():
        return target
    from pet.export import write_gguf_adapter  # needs torch and gguf: imported only here

    return write_gguf_adapter(adapter.path, target)
