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


def _examples(tmp_path: Path) -> Path:
    from tests.test_trainer import make_examples

    data = tmp_path / "ex.jsonl"
    data.write_text("".join(json.dumps(e) + "\n" for e in make_examples()))
    return data


def _pet(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pet", *args], cwd=REPO, capture_output=True, text=True, timeout=600)


def test_cuda_run_trains_and_writes_the_run_folder(cuda, tmp_path):
    from tests.test_trainer import make_tiny_model

    model, out = make_tiny_model(tmp_path / "tiny"), tmp_path / "run"
    r = _pet("train", "--base", str(model), "--data", str(_examples(tmp_path)), "--device", "cuda", "--max-steps", "4",
             "--batch-size", "4", "--lr", "1e-2", "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert s["status"] == "finished" and s["steps"] == 4
    assert s["eval_loss_after"] < s["eval_loss_before"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["resolved"]["device"] == "cuda"
    meta = json.loads((out / "adapter" / "pet_adapter.json").read_text())
    assert meta["method"] in ("peft-lora-bf16", "peft-lora-fp32", "unsloth-qlora-4bit")


def test_cuda_full_run_freezes_embeddings_writes_gguf_and_exports_a_lora(cuda, tmp_path):
    """--method full on the GPU: the layers train, the embeddings stay put, the GGUF is written, and the weight
    change extracts into a LoRA that `pet export lora` reports."""
    from safetensors.torch import load_file

    from tests.tiny_models import make_tiny

    base, out = make_tiny(tmp_path / "base", "gemma3"), tmp_path / "run"
    r = _pet("train", "--base", str(base), "--data", str(_examples(tmp_path)), "--method", "full", "--device", "cuda",
             "--max-steps", "8", "--eval-every", "4", "--lr", "3e-3", "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert s["status"] == "finished" and s["method"] == "full" and Path(s["gguf"]).stat().st_size > 0
    assert s["eval_loss_after"] < s["eval_loss_before"]
    assert json.loads((out / "config.json").read_text())["resolved"]["device"] == "cuda"
    before, after = load_file(base / "model.safetensors"), load_file(out / "model" / "model.safetensors")
    assert cuda.equal(before["model.embed_tokens.weight"], after["model.embed_tokens.weight"])
    assert any(not cuda.equal(before[k], after[k]) for k in before if k != "model.embed_tokens.weight")
    e = _pet("export", "lora", "--run", str(out), "--rank", "4", "--out", str(tmp_path / "lora"), "--json")
    assert e.returncode == 0, e.stderr[-3000:]
    assert (tmp_path / "lora" / "adapter_model.safetensors").is_file()


def test_cuda_trained_adapter_gives_the_same_logits_on_the_cpu(cuda, tmp_path):
    """Trained on the GPU, served on a CPU: the saved adapter must not depend on where it was trained."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tests.test_trainer import make_tiny_model

    model, out = make_tiny_model(tmp_path / "tiny"), tmp_path / "run"
    r = _pet("train", "--base", str(model), "--data", str(_examples(tmp_path)), "--device", "cuda", "--precision", "fp32",
             "--max-steps", "4", "--lr", "1e-2", "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    ids = cuda.tensor([[2, 5, 9, 17, 33, 4]])
    logits = {}
    for dev in ("cuda", "cpu"):
        base = AutoModelForCausalLM.from_pretrained(model, dtype=cuda.float32).to(dev)
        tuned = PeftModel.from_pretrained(base, out / "adapter").eval()
        with cuda.no_grad():
            logits[dev] = tuned(ids.to(dev)).logits.float().cpu()
    plain = AutoModelForCausalLM.from_pretrained(model, dtype=cuda.float32).eval()
    with cuda.no_grad():
        untuned = plain(ids).logits
    assert not cuda.allclose(untuned, logits["cpu"], atol=1e-3)  # the adapter changed something
    assert cuda.allclose(logits["cuda"], logits["cpu"], atol=1e-3, rtol=1e-3)
