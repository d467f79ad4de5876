"""Ship a finished run's adapter under assets/adapters/NAME: PEFT weights in bf16, the GGUF adapter in
f16 (what llama.cpp tiers load), pet_adapter.json, and run.json (the exact command, the data's SHA-256,
the held-out losses and the training speed), so the shipped tier can be retrained and checked.

    python scripts/ship_adapter.py RUN_DIR NAME --command "python -m pet train ..."

The repository's rule: adapters only, 30 MB a file, 64 MB under assets/adapters in all.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pet.adapters import file_sha256  # noqa: E402
from pet.files import atomic_folder  # noqa: E402
from pet.train import jobs  # noqa: E402

FILE_LIMIT = 30 * 2**20
TOTAL_LIMIT = 64 * 2**20


def ship(run_dir: Path, name: str, commands: list[str]) -> Path:
    import torch
    from safetensors.torch import load_file, save_file

    from pet import export

    src = run_dir / "adapter"
    if not (src / "adapter_model.safetensors").is_file():
        raise SystemExit(f"{src} has no adapter_model.safetensors: is the run finished?")
    dest = ROOT / "assets" / "adapters" / name
    with atomic_folder(dest) as tmp:  # the shipped adapter is replaced whole, or not at all
        for f in ("adapter_config.json", "pet_adapter.json"):
            shutil.copy2(src / f, tmp / f)
        tensors = load_file(str(src / "adapter_model.safetensors"))
        save_file({k: v.to(torch.bfloat16).contiguous() for k, v in tensors.items()},
                  str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
        export.write_gguf_adapter(src, tmp / "adapter.gguf")  # from the run's own weights (fp32 in older runs)
        record = run_record(run_dir, commands)
        (tmp / "run.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        check_sizes(tmp, name)
    return dest


def run_record(run_dir: Path, commands: list[str]) -> dict:
    """run.json: how the adapter was trained (command, data and its SHA-256, settings) and how it scored."""
    info = jobs.info(run_dir)
    final = json.loads((run_dir / "final_eval.json").read_text(encoding="utf-8"))
    cfg = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    metrics = [json.loads(line) for line in open(run_dir / "metrics.jsonl", encoding="utf-8") if line.strip()]
    data_file = ROOT / cfg["resolved"]["data_path"] if not Path(cfg["resolved"]["data_path"]).is_absolute() \
        else Path(cfg["resolved"]["data_path"])
    return {
        "command": commands,
        "data_file": str(data_file.relative_to(ROOT)) if data_file.is_relative_to(ROOT) else str(data_file),
        "data_file_sha256": file_sha256(data_file) if data_file.is_file() else None,
        "data_sha256": (run_dir / "data_sha256").read_text().strip(),
        "data_sha256_means": "pet.dataset.examples_sha256 of the exact train-split examples trained on",
        "train_examples": cfg["resolved"]["train_examples"],
        "heldout_examples": cfg["resolved"]["heldout_examples"],
        "base_model": cfg["resolved"]["base"],
        "template": cfg["resolved"]["template"],
        "system_prompt": cfg["resolved"]["system_prompt"],
        "method": f"peft-lora-{cfg['resolved']['precision']}",
        "lora_r": cfg["lora_r"], "lora_alpha": cfg["lora_alpha"], "lr": cfg["lr"] or cfg["resolved"].get("lr"),
        "batch": f"{cfg['batch_size']} x {cfg['grad_accum']} accumulation", "epochs": cfg["epochs"],
        "max_steps": cfg["max_steps"], "end_weight": cfg["end_weight"], "seed": cfg["seed"],
        "evals": [{"step": m["step"], "eval_loss": m["eval_loss"]} for m in metrics if m.get("eval_loss") is not None],
        "final_eval": final,
        "status": info.get("state"),
        "shipped_as": {"peft": "adapter_model.safetensors (bf16)", "gguf": "adapter.gguf (f16)"},
    }


def check_sizes(folder: Path, name: str) -> None:
    """The repository's limits, counting `folder` in place of the adapter called `name`."""
    big = [p.name for p in folder.iterdir() if p.stat().st_size > FILE_LIMIT]
    if big:
        raise SystemExit(f"over 30 MB a file: {big}; train a smaller rank")
    others = sum(p.stat().st_size for d in (ROOT / "assets" / "adapters").iterdir()
                 if d.is_dir() and d.name not in (name, folder.name) for p in d.iterdir())
    total = others + sum(p.stat().st_size for p in folder.iterdir())
    if total > TOTAL_LIMIT:
        raise SystemExit(f"assets/adapters would hold {total / 2**20:.1f} MB, over 64 MB")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("name")
    ap.add_argument("--command", action="append", default=[], help="the command(s) that trained it")
    a = ap.parse_args(argv)
    dest = ship(Path(a.run_dir), a.name, a.command)
    for p in sorted(dest.iterdir()):
        print(f"{p.stat().st_size / 2**20:7.1f} MB  {p.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
