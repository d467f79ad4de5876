"""`--method full` on a tiny Gemma 3 built here: the weights it trains, the GGUF it writes (llama.cpp gives
transformers' greedy tokens), and `pet export lora`, the SVD extraction of its weight change into a LoRA."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.test_trainer import REPO, make_examples
from tests.tiny_models import make_tiny

N_TOKENS = 8


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("full")
    base = make_tiny(root / "base", "gemma3")
    data = root / "examples.jsonl"
    data.write_text("".join(json.dumps(e) + "\n" for e in make_examples()))
    out = root / "run"
    r = subprocess.run([sys.executable, "-m", "pet", "train", "--base", str(base), "--data", str(data), "--method",
                        "full", "--max-steps", "8", "--eval-every", "4", "--lr", "3e-3", "--precision", "fp32",
                        "--out", str(out), "--json"], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return base, out, json.loads(r.stdout.strip().splitlines()[-1])


def _export(*args):
    return subprocess.run([sys.executable, "-m", "pet", "export", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600)


def test_full_run_trains_layers_not_embeddings(full_run):
    import torch
    from safetensors.torch import load_file

    base, out, s = full_run
    assert s["status"] == "finished" and s["method"] == "full" and s["adapter"] is None
    assert s["model"] == str(out / "model") and s["gguf"] == str(out / "model.gguf")
    assert s["eval_loss_after"] < s["eval_loss_before"]
    before, after = load_file(base / "model.safetensors"), load_file(out / "model" / "model.safetensors")
    assert after["model.embed_tokens.weight"].dtype == torch.float32  # exact weights, for the extraction
    assert torch.equal(before["model.embed_tokens.weight"], after["model.embed_tokens.weight"])  # frozen
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert set(changed) == set(before) - {"model.embed_tokens.weight"}  # every other weight trained
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["method"] == "full" and cfg["resolved"]["lr"] == 3e-3
    import re

    n, total = map(int, re.search(r"training (\d+) of (\d+) weights", (out / "train.log").read_text()).groups())
    assert total - n == before["model.embed_tokens.weight"].numel()


def test_full_gguf_gives_transformers_greedy_tokens(full_run):
    import torch
    from llama_cpp import Llama
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, out, s = full_run
    tok = AutoTokenizer.from_pretrained(out / "model")
    model = AutoModelForCausalLM.from_pretrained(out / "model", dtype=torch.float32)
    text = tok.apply_chat_template([{"role": "user", "content": "write about rain number 7"}], tokenize=False,
                                   add_generation_prompt=True)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        hf = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                            max_new_tokens=N_TOKENS, do_sample=False)[0, len(ids):].tolist()
    llm = Llama(s["gguf"], n_ctx=256, verbose=False)
    assert llm.tokenize(text.encode(), add_bos=False, special=True) == ids
    cpp = []
    for t in llm.generate(ids, temp=0.0, top_k=1, repeat_penalty=1.0):
        cpp.append(t)
        if len(cpp) == N_TOKENS:
            break
    llm.close()
    assert len(set(hf)) > 2, f"the tuned model should say something, not repeat one token: {hf}"
    assert cpp == hf


def test_export_lora_keeps_the_energy_it_reports(full_run, tmp_path):
    import torch
    from safetensors.torch import load_file

    base, out, _ = full_run
    r = _export("lora", "--run", str(out), "--rank", "1", "--out", str(tmp_path / "r1"), "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads(r.stdout)
    # The reported share, recomputed here from the two models' weights with numpy's SVD.
    b, t = load_file(base / "model.safetensors"), load_file(out / "model" / "model.safetensors")
    linear = [k for k in b if k.endswith("_proj.weight")]
    deltas = {k: (t[k] - b[k]).double().numpy() for k in b}
    total = sum(float((d ** 2).sum()) for d in deltas.values())
    sv = {k: np.linalg.svd(deltas[k], compute_uv=False) for k in linear}
    top1 = sum(float(s[0] ** 2) for s in sv.values())
    assert rep["energy_kept"] == pytest.approx(top1 / total, rel=1e-4)
    assert rep["energy_not_adaptable"] == pytest.approx(1 - sum(float((deltas[k] ** 2).sum()) for k in linear) / total,
                                                        rel=1e-4)
    kept = [row["energy_kept_of_adapted"] for row in rep["by_rank"]]
    assert kept == sorted(kept) and [row["rank"] for row in rep["by_rank"]][:3] == [1, 2, 4]

    # At the largest rank (64 here), B @ A is the whole change of each adapted weight.
    r = _export("lora", "--run", str(out), "--rank", "64", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads(r.stdout)
    assert rep["adapter"] == str(out / "adapter") and rep["energy_kept_of_adapted"] == pytest.approx(1.0, abs=1e-6)
    lora = load_file(out / "adapter" / "adapter_model.safetensors")
    assert {v.dtype for v in lora.values()} == {torch.bfloat16}
    for k in linear:
        m = "base_model.model." + k[:-len(".weight")]
        ba = lora[m + ".lora_B.weight"].float() @ lora[m + ".lora_A.weight"].float()
        d = torch.from_numpy(deltas[k]).float()
        assert float((ba - d).norm() / d.norm()) < 0.02  # bf16 factors
    meta = json.loads((out / "adapter" / "pet_adapter.json").read_text())
    assert meta["lora_r"] == 64 and meta["extraction"]["rank"] == 64 and meta["base"]["ref"] == str(base.resolve())
    r = _export("lora", "--run", str(out), "--rank", "65")
    assert r.returncode == 1 and "--rank 65: at most 64 for this model" in r.stderr


def test_extracted_adapter_runs_in_llama_cpp_like_peft(full_run, tmp_path):
    import torch
    from llama_cpp import Llama
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pet.export import write_gguf_model

    base, out, _ = full_run
    r = _export("lora", "--run", str(out), "--rank", "8", "--out", str(tmp_path / "r8"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "rank  energy kept" in r.stdout and f"adapter: {tmp_path / 'r8'}" in r.stdout
    base_gguf = write_gguf_model(base, tmp_path / "base.gguf", outtype="f32")
    tok = AutoTokenizer.from_pretrained(base)
    ids = tok(tok.apply_chat_template([{"role": "user", "content": "write about tea"}], tokenize=False,
                                      add_generation_prompt=True), add_special_tokens=False)["input_ids"]
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), tmp_path / "r8")
    with torch.no_grad():
        hf = model(torch.tensor([ids])).logits[0].numpy()
    llm = Llama(str(base_gguf), n_ctx=256, verbose=False, logits_all=True, lora_path=str(tmp_path / "r8" / "adapter.gguf"))
    llm.eval(ids)
    cpp = np.array(llm.scores[:len(ids)])
    llm.close()
    assert np.abs(cpp - hf).max() < 0.05


def test_export_refuses_a_lora_run(tmp_path):
    run = tmp_path / "lora-run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"method": "lora", "resolved": {}}))
    r = _export("lora", "--run", str(run), "--rank", "8")
    assert r.returncode == 1 and "trained a LoRA" in r.stderr and "Traceback" not in r.stderr
    r = _export("gguf", "--run", str(tmp_path / "nope"))
    assert r.returncode == 1 and "--run: no run" in r.stderr
