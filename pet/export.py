"""Exports of a trained adapter: the GGUF LoRA adapter that llama.cpp loads (`lora_path=`).

The GGUF adapter format (as llama.cpp's convert_lora_to_gguf.py writes it): general.type=adapter,
adapter.type=lora, adapter.lora.alpha, and for each adapted weight `<gguf name>.weight.lora_a`
(A: r x in) and `.lora_b` (B: out x r), named by gguf's tensor-name map for the architecture.
llama.cpp scales the update by alpha / r, as PEFT does.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from pet import PetError

ARCHES = {"gemma3_text": "GEMMA3", "gemma3": "GEMMA3"}
_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<ab>[AB])\.weight$")


def _arch_of(peft_dir: Path, cfg: dict) -> str:
    """The base model's architecture: from the adapter's own record, or the base folder's config."""
    info = peft_dir / "pet_adapter.json"
    if info.exists():
        arch = json.loads(info.read_text(encoding="utf-8")).get("model_type")
        if arch:
            return arch
    base = Path(cfg.get("base_model_name_or_path") or "")
    if (base / "config.json").exists():
        return json.loads((base / "config.json").read_text()).get("model_type", "")
    return "gemma3_text"  # PET's trainer targets Gemma 3 by default


def write_gguf_adapter(peft_dir: str | Path, target: str | Path) -> Path:
    """Convert a PEFT LoRA (adapter_config.json + adapter_model.safetensors) to a GGUF adapter file."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    peft_dir, target = Path(peft_dir), Path(target)
    cfg_path, weights = peft_dir / "adapter_config.json", peft_dir / "adapter_model.safetensors"
    missing = [p.name for p in (cfg_path, weights) if not p.exists()]
    if missing:
        raise PetError(f"adapter {peft_dir}: {', '.join(missing)} missing; it is not a PEFT LoRA folder "
                       "(retrain it with `python -m pet train`)")
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    problems = []
    if cfg.get("peft_type") != "LORA":
        problems.append(f"peft_type is {cfg.get('peft_type')!r}, only LORA converts")
    if cfg.get("use_dora") or cfg.get("use_rslora"):
        problems.append("DoRA/rsLoRA adapters have no llama.cpp GGUF form; train a plain LoRA")
    if cfg.get("rank_pattern") or cfg.get("alpha_pattern"):
        problems.append("per-layer rank/alpha patterns are not supported by the GGUF adapter format")
    if cfg.get("modules_to_save"):
        problems.append("modules_to_save (fully trained layers) cannot go into a GGUF LoRA adapter")
    arch = _arch_of(peft_dir, cfg)
    if arch not in ARCHES:
        problems.append(f"base architecture {arch!r} is not supported (supported: {', '.join(sorted(ARCHES))})")
    if problems:
        raise PetError(f"adapter {peft_dir} cannot be written as a GGUF adapter: " + "; ".join(problems))
    tensors = load_file(str(weights))
    pairs: dict[str, dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        m = _KEY.match(key)
        if not m:
            raise PetError(f"adapter {peft_dir}: unexpected tensor {key!r} (not a LoRA A/B weight)")
        pairs.setdefault(m["module"], {})[m["ab"]] = value
    layers = [int(x) for k in pairs for x in re.findall(r"\.layers\.(\d+)\.", k)]
    names = gguf.get_tensor_name_map(getattr(gguf.MODEL_ARCH, ARCHES[arch]), max(layers, default=0) + 1)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    writer = gguf.GGUFWriter(str(tmp), gguf.MODEL_ARCH_NAMES[getattr(gguf.MODEL_ARCH, ARCHES[arch])])
    try:
        writer.add_string("general.type", "adapter")
        writer.add_string("adapter.type", "lora")
        writer.add_float32("adapter.lora.alpha", float(cfg["lora_alpha"]))
        for module in sorted(pairs):
            ab = pairs[module]
            if set(ab) != {"A", "B"}:
                raise PetError(f"adapter {peft_dir}: {module} has only lora_{''.join(ab)}")
            name = names.get_name(module)
            if name is None:
                raise PetError(f"adapter {peft_dir}: no GGUF tensor name for {module!r}")
            # A is r x in and B is out x r in numpy order; GGUF stores dims reversed, as llama.cpp expects.
            writer.add_tensor(f"{name}.weight.lora_a", np.ascontiguousarray(ab["A"], dtype=np.float32))
            writer.add_tensor(f"{name}.weight.lora_b", np.ascontiguousarray(ab["B"], dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
