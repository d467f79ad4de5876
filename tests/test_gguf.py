"""GGUF written with the gguf package, on tiny models built here: llama.cpp computes what transformers computes.

Each architecture PET trains (Gemma 3 for enhanced, llama for light's SmolLM2) stores some weights
differently in GGUF (llama: Q/K rows permuted; Gemma 3: norms as 1 + w). A wrong layout still loads,
so these tests compare logits, not just file names.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from pet import PetError
from pet.export import write_gguf_model
from tests.tiny_models import make_tiny

ARCHES = ["gemma3", "llama"]


@pytest.fixture(scope="module", params=ARCHES)
def tiny(request, tmp_path_factory):
    return request.param, make_tiny(tmp_path_factory.mktemp(request.param) / "model", request.param)


def _prompt_ids(folder):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    text = tok.apply_chat_template([{"role": "user", "content": "write a prompt about the sea"}], tokenize=False,
                                   add_generation_prompt=True)
    return text, tok(text, add_special_tokens=False)["input_ids"]


def _hf_logits(model, ids):
    import torch

    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def _cpp(gguf_path, ids, lora=None, text=None, n_gen=0):
    from llama_cpp import Llama

    llm = Llama(str(gguf_path), n_ctx=256, verbose=False, logits_all=True, lora_path=str(lora) if lora else None)
    toks = llm.tokenize(text.encode(), add_bos=False, special=True) if text else None
    llm.eval(ids)
    logits = np.array(llm.scores[:len(ids)])
    llm.reset()
    gen = []
    if n_gen:
        for t in llm.generate(ids, temp=0.0, top_k=1, repeat_penalty=1.0):
            gen.append(t)
            if len(gen) == n_gen:
                break
    llm.close()
    return logits, toks, gen


def test_full_model_gguf_matches_transformers(tiny, tmp_path):
    import torch
    from gguf import GGUFReader
    from transformers import AutoModelForCausalLM

    arch, folder = tiny
    target = write_gguf_model(folder, tmp_path / "m.gguf", outtype="f32", chat_template="{{ messages }}")
    assert not list(tmp_path.glob("*.tmp*"))
    r = GGUFReader(str(target))
    assert bytes(r.fields["general.architecture"].parts[-1]).decode() == arch
    assert bytes(r.fields["tokenizer.chat_template"].parts[-1]).decode() == "{{ messages }}"
    text, ids = _prompt_ids(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    hf = _hf_logits(model, ids)
    cpp, cpp_ids, _ = _cpp(target, ids, text=text)
    assert cpp_ids == ids  # the written tokenizer splits the rendered prompt as transformers does
    # Every position's logits, not just the last: a wrong Q/K layout or norm offset moves them by whole units
    # (the spread of these logits is about 1.5); llama.cpp's f16 KV cache leaves about 0.01.
    assert hf.std() > 0.5
    assert np.abs(cpp - hf).max() < 0.05


def test_lora_gguf_matches_peft(tiny, tmp_path):
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    from pet.train.trainer import _model_config, save_adapter

    arch, folder = tiny
    base_gguf = write_gguf_model(folder, tmp_path / "base.gguf", outtype="f32")
    torch.manual_seed(0)
    lora = get_peft_model(AutoModelForCausalLM.from_pretrained(folder), LoraConfig(
        r=4, lora_alpha=8, init_lora_weights=False, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"],
        task_type="CAUSAL_LM"))
    meta = {"base": {"ref": str(folder)}, "model_type": lora.config.model_type, "model_config": _model_config(lora)}
    saved = save_adapter(lora, tmp_path / "adapter", meta, "pet_adapter.json")
    assert saved["gguf"] == str(tmp_path / "adapter" / "adapter.gguf")
    assert json.loads((tmp_path / "adapter" / "pet_adapter.json").read_text())["model_config"]["num_key_value_heads"]
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(folder), tmp_path / "adapter")
    _, ids = _prompt_ids(folder)
    hf = _hf_logits(model, ids)
    with model.disable_adapter():
        plain = _hf_logits(model, ids)
    cpp, _, _ = _cpp(base_gguf, ids, lora=saved["gguf"])
    assert np.abs(hf - plain).max() > 2.0, "the adapter must move the logits, or the parity proves nothing"
    assert np.abs(cpp - hf).max() < 0.05


def test_gemma3_settings_llama_cpp_would_ignore_are_refused(tmp_path):
    folder = make_tiny(tmp_path / "odd", "gemma3")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["query_pre_attn_scalar"] = 256
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(PetError, match=r"query_pre_attn_scalar 256 != head_dim 32"):
        write_gguf_model(folder, tmp_path / "odd.gguf")
    assert not list(tmp_path.glob("odd.gguf*"))


def test_unsupported_architecture_is_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(PetError, match=r"base architecture 'qwen2' has no GGUF export here \(supported: gemma3, "):
        write_gguf_model(tmp_path, tmp_path / "x.gguf")
