"""The trainer on CUDA (plain PEFT, or unsloth QLoRA when installed): runs only where a GPU exists."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def cuda():
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here (torch.cuda.is_available() is False)")
    return torch


def test_cuda_run_trains_and_writes_the_run_folder(cuda, tmp_path):
    from tests.test_trainer import make_examples, make_tiny_model

    model = make_tiny_model(tmp_path / "tiny")
    data = tmp_path / "ex.jsonl"
    data.write_text("".join(json.dumps(e) + "\n" for e in make_examples()))
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "pet", "train", "--base", str(model), "--data", str(data),
                        "--device", "cuda", "--max-steps", "4", "--batch-size", "4", "--lr", "1e-2",
                        "--out", str(out), "--json"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert s["status"] == "finished" and s["steps"] == 4
    assert s["eval_loss_after"] < s["eval_loss_before"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["resolved"]["device"] == "cuda"
    meta = json.loads((out / "adapter" / "pet_adapter.json").read_text())
    assert meta["method"] in ("peft-lora-bf16", "peft-lora-fp32", "unsloth-qlora-4bit")
