"""Exports for llama.cpp, written with the `gguf` package: LoRA adapters and whole fine-tuned models.

The GGUF adapter format (as llama.cpp's convert_lora_to_gguf.py writes it): general.type=adapter,
adapter.type=lora, adapter.lora.alpha, and for each adapted weight `<gguf name>.weight.lora_a`
(A: r x in) and `.lora_b` (B: out x r), named by gguf's tensor-name map for the architecture.
llama.cpp scales the update by alpha / r, as PEFT does.

A weight is not always stored in GGUF as transformers holds it; each architecture's differences
are in `to_gguf` below and apply to whole weights and to LoRA B alike (B carries the output rows):
- llama: Q and K rows are permuted (llama.cpp's rotary embedding pairs dimensions differently);
- gemma3: norm weights are stored as 1 + w (Gemma's RMSNorm multiplies by 1 + w, llama.cpp by w).
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

from pet import PetError

# transformers model_type -> gguf MODEL_ARCH member
ARCHES = {"gemma3_text": "GEMMA3", "gemma3": "GEMMA3", "llama": "LLAMA"}
_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<ab>[AB])\.weight$")
HEAD_KEYS = ("num_attention_heads", "num_key_value_heads")


def gguf_arch(model_type: str | None):
    import gguf

    if model_type not in ARCHES:
        raise PetError(f"base architecture {model_type!r} has no GGUF export here "
                       f"(supported: {', '.join(sorted(ARCHES))})")
    return getattr(gguf.MODEL_ARCH, ARCHES[model_type])


def model_config(model_type: str | None, config: dict) -> dict:
    """What an export needs to know about the base besides its tensors (recorded with each adapter)."""
    text = config.get("text_config") or config
    out = {"model_type": model_type or text.get("model_type")}
    out.update({k: text[k] for k in HEAD_KEYS if text.get(k) is not None})
    if out.get("num_attention_heads") and not out.get("num_key_value_heads"):
        out["num_key_value_heads"] = out["num_attention_heads"]
    return out


def _permute_rows(w, n_head: int):
    """llama.cpp's Q/K layout: within each head, interleave the two rotary halves of the rows."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def to_gguf(model_type: str, hf_name: str, w, hp: dict, whole_weight: bool = True):
    """The array llama.cpp expects for the transformers tensor `hf_name` (or for LoRA B of that weight)."""
    arch = ARCHES[model_type]
    if arch == "LLAMA":
        if hf_name.endswith("self_attn.q_proj.weight"):
            return _permute_rows(w, hp["num_attention_heads"])
        if hf_name.endswith("self_attn.k_proj.weight"):
            return _permute_rows(w, hp["num_key_value_heads"])
    if arch == "GEMMA3" and whole_weight and hf_name.endswith("norm.weight"):
        return w + 1
    return w


def _adapter_config(peft_dir: Path, cfg: dict) -> dict:
    """The base's model_type and head counts: from the adapter's own record, else the base folder's config."""
    info = peft_dir / "pet_adapter.json"
    meta = json.loads(info.read_text(encoding="utf-8")) if info.exists() else {}
    rec = dict(meta.get("model_config") or {})
    rec.setdefault("model_type", meta.get("model_type"))
    if all(rec.get(k) for k in ("model_type", *HEAD_KEYS)):
        return rec
    base = Path(cfg.get("base_model_name_or_path") or "")
    if (base / "config.json").exists():
        found = model_config(None, json.loads((base / "config.json").read_text(encoding="utf-8")))
        return {**found, **{k: v for k, v in rec.items() if v}}
    rec["model_type"] = rec.get("model_type") or "gemma3_text"  # adapters from before the record: Gemma 3
    return rec


def write_gguf_adapter(peft_dir: str | Path, target: str | Path) -> Path:
    """Convert a PEFT LoRA (adapter_config.json + adapter_model.safetensors) to a GGUF adapter file (f16)."""
    import gguf
    import numpy as np
    from safetensors.torch import load_file

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
    hp = _adapter_config(peft_dir, cfg)
    arch = hp.get("model_type")
    if arch not in ARCHES:
        problems.append(f"base architecture {arch!r} is not supported (supported: {', '.join(sorted(ARCHES))})")
    elif ARCHES[arch] == "LLAMA" and not all(hp.get(k) for k in HEAD_KEYS):
        problems.append("the base's head counts are unknown (pet_adapter.json has no model_config and the base "
                        "folder has no config.json); retrain the adapter with `python -m pet train`")
    if problems:
        raise PetError(f"adapter {peft_dir} cannot be written as a GGUF adapter: " + "; ".join(problems))
    tensors = {k: v.float().numpy() for k, v in load_file(str(weights)).items()}  # bf16 has no numpy dtype
    pairs: dict[str, dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        m = _KEY.match(key)
        if not m:
            raise PetError(f"adapter {peft_dir}: unexpected tensor {key!r} (not a LoRA A/B weight)")
        pairs.setdefault(m["module"], {})[m["ab"]] = value
    layers = [int(x) for k in pairs for x in re.findall(r"\.layers\.(\d+)\.", k)]
    march = gguf_arch(arch)
    names = gguf.get_tensor_name_map(march, max(layers, default=0) + 1)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    writer = gguf.GGUFWriter(str(tmp), gguf.MODEL_ARCH_NAMES[march])
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
            b = to_gguf(arch, module + ".weight", ab["B"], hp, whole_weight=False)
            # A is r x in and B is out x r in numpy order; GGUF stores dims reversed, as llama.cpp expects.
            # f16 halves the file against f32 and llama.cpp applies f16 adapters directly.
            writer.add_tensor(f"{name}.weight.lora_a", np.ascontiguousarray(ab["A"], dtype=np.float16))
            writer.add_tensor(f"{name}.weight.lora_b", np.ascontiguousarray(b, dtype=np.float16))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


# -- whole models ------------------------------------------------------------------------------------
OUTTYPES = ("f16", "f32", "q8_0")


def _rope(text: dict, kind: str) -> dict:
    """One attention kind's rope settings, from transformers 5's rope_parameters or 4.x's flat keys."""
    rp = text.get("rope_parameters") or {}
    rp = rp.get(kind, rp) if isinstance(rp.get(kind), dict) else rp
    legacy = {"full_attention": text.get("rope_theta"), "sliding_attention": text.get("rope_local_base_freq")}
    scaling = text.get("rope_scaling") or {}
    return {"theta": rp.get("rope_theta", legacy.get(kind) or text.get("rope_theta")),
            "type": rp.get("rope_type", scaling.get("rope_type", scaling.get("type", "default"))),
            "factor": rp.get("factor", scaling.get("factor"))}


def _check_and_add_hparams(writer, model_type: str, text: dict) -> None:
    """Write the architecture's hyperparameters, refusing what llama.cpp would silently compute differently."""
    import gguf

    arch = ARCHES[model_type]
    n_layers, head_dim = text["num_hidden_layers"], text.get("head_dim") or text["hidden_size"] // text[
        "num_attention_heads"]
    problems = []
    full = _rope(text, "full_attention")
    if arch == "GEMMA3":
        # llama.cpp hard-codes these for Gemma 3 (all released sizes up to 12B follow them).
        if text.get("query_pre_attn_scalar", head_dim) != head_dim:
            problems.append(f"query_pre_attn_scalar {text['query_pre_attn_scalar']} != head_dim {head_dim} "
                            "(llama.cpp scales attention by 1/sqrt(head_dim))")
        types = text.get("layer_types") or []
        want = ["sliding_attention" if i % 6 < 5 else "full_attention" for i in range(n_layers)]
        if types and types != want:
            problems.append("layer_types must repeat 5 sliding + 1 full attention layers, as llama.cpp assumes")
        local = _rope(text, "sliding_attention")["theta"]
        if local not in (None, 10000.0):
            problems.append(f"sliding-window rope base {local} != 10000 (llama.cpp's fixed value)")
        for cap in ("attn_logit_softcapping", "final_logit_softcapping"):
            if text.get(cap):
                problems.append(f"{cap} is set; llama.cpp's Gemma 3 does not apply it")
    if arch == "LLAMA" and (text.get("attention_bias") or text.get("mlp_bias")):
        problems.append("attention/MLP biases are not written")
    if full["type"] not in ("default", "linear", None):
        problems.append(f"rope type {full['type']!r} is not written (default and linear are)")
    if problems:
        raise PetError(f"{model_type} model cannot be written as a GGUF that llama.cpp runs the same way: "
                       + "; ".join(problems))
    writer.add_context_length(text["max_position_embeddings"])
    writer.add_embedding_length(text["hidden_size"])
    writer.add_block_count(n_layers)
    writer.add_feed_forward_length(text["intermediate_size"])
    writer.add_head_count(text["num_attention_heads"])
    writer.add_head_count_kv(text.get("num_key_value_heads") or text["num_attention_heads"])
    writer.add_layer_norm_rms_eps(text["rms_norm_eps"])
    writer.add_rope_freq_base(full["theta"])
    if full["type"] == "linear" and full["factor"]:
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(full["factor"])
    if arch == "GEMMA3":
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
        if text.get("sliding_window"):
            writer.add_sliding_window(text["sliding_window"])
    else:
        writer.add_rope_dimension_count(head_dim)
        writer.add_vocab_size(text["vocab_size"])
        if head_dim != text["hidden_size"] // text["num_attention_heads"]:
            writer.add_key_length(head_dim)
            writer.add_value_length(head_dim)


def _copy_tokenizer(writer, gguf_path: str, skip: tuple[str, ...]) -> None:
    """The tokenizer of the GGUF the model was trained from, field for field (same vocabulary)."""
    import gguf

    reader = gguf.GGUFReader(gguf_path)
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer.") or key in skip:
            continue
        kind = field.types[0]
        if kind == gguf.GGUFValueType.ARRAY:
            sub = field.types[-1]
            if sub == gguf.GGUFValueType.STRING:  # raw bytes: a token need not be valid UTF-8
                value = [bytes(field.parts[i]) for i in field.data]
            else:
                value = field.contents()
            writer.add_key_value(key, value, kind, sub_type=sub)
        elif kind == gguf.GGUFValueType.STRING:
            writer.add_key_value(key, bytes(field.parts[field.data[0]]), kind)
        else:
            writer.add_key_value(key, field.contents(), kind)


def _tokenizer_from_json(writer, model_dir: Path, vocab_size: int) -> None:
    """A byte-level BPE tokenizer.json as llama.cpp's gpt2 tokenizer (tokens, types, merges, special ids)."""
    import gguf
    from transformers import AutoTokenizer

    path = model_dir / "tokenizer.json"
    tj = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    model = tj.get("model") or {}
    pre = json.dumps(tj.get("pre_tokenizer") or {})
    if model.get("type") != "BPE" or "ByteLevel" not in pre:
        raise PetError(f"{model_dir}: only a byte-level BPE tokenizer.json can be written without the base's GGUF; "
                       "give the GGUF the model came from (its tokenizer is copied)")
    tokens = [f"[PAD{i}]" for i in range(vocab_size)]
    types = [gguf.TokenType.UNUSED] * vocab_size
    for text, i in model["vocab"].items():
        if i < vocab_size:
            tokens[i], types[i] = text, gguf.TokenType.NORMAL
    for t in tj.get("added_tokens", []):
        if t["id"] < vocab_size:
            tokens[t["id"]] = t["content"]
            types[t["id"]] = gguf.TokenType.CONTROL if t.get("special") else gguf.TokenType.USER_DEFINED
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")  # the GPT-2 split regex, as HF's ByteLevel pre-tokenizer uses
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    if merges:
        writer.add_token_merges(merges)
    tok = AutoTokenizer.from_pretrained(model_dir)
    for name, add in (("bos", writer.add_bos_token_id), ("eos", writer.add_eos_token_id),
                      ("unk", writer.add_unk_token_id), ("pad", writer.add_pad_token_id)):
        tid = getattr(tok, f"{name}_token_id", None)
        if tid is not None:
            add(tid)
    writer.add_add_bos_token(False)  # PET's templates write the BOS token themselves


def write_gguf_model(model_dir: str | Path, target: str | Path, tokenizer_gguf: str | None = None,
                     chat_template: str | None = None, name: str | None = None, outtype: str = "f16") -> Path:
    """Write a transformers model folder (llama or Gemma 3) as a GGUF that llama.cpp serves.

    tokenizer_gguf: the GGUF the model was trained from; its tokenizer is copied (needed for Gemma's
    SentencePiece vocabulary). Without it, a byte-level BPE tokenizer.json is converted.
    outtype: f16 (default; half the size of f32), f32 (exact), or q8_0. Norms are always f32.
    """
    import gguf
    import numpy as np
    from safetensors.torch import load_file

    model_dir, target = Path(model_dir), Path(target)
    if outtype not in OUTTYPES:
        raise PetError(f"--outtype {outtype!r}: choose from {', '.join(OUTTYPES)}")
    cfg_path = model_dir / "config.json"
    files = sorted(model_dir.glob("*.safetensors"))
    if not cfg_path.exists() or not files:
        raise PetError(f"{model_dir}: not a transformers model folder (config.json and *.safetensors needed)")
    config = json.loads(cfg_path.read_text(encoding="utf-8"))
    text = config.get("text_config") or config
    model_type = text.get("model_type") or config.get("model_type")
    march = gguf_arch(model_type)
    hp = model_config(model_type, config)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    writer = gguf.GGUFWriter(str(tmp), gguf.MODEL_ARCH_NAMES[march])
    try:
        writer.add_type("model")
        writer.add_name(name or model_dir.name)
        _check_and_add_hparams(writer, model_type, text)
        if tokenizer_gguf:
            _copy_tokenizer(writer, tokenizer_gguf, skip=("tokenizer.chat_template",) if chat_template else ())
        else:
            _tokenizer_from_json(writer, model_dir, text["vocab_size"])
        if chat_template:
            writer.add_chat_template(chat_template)
        ftype = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[outtype]
        writer.add_file_type(ftype)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        names = gguf.get_tensor_name_map(march, text["num_hidden_layers"])
        tied = config.get("tie_word_embeddings", text.get("tie_word_embeddings", True))
        for f in files:
            for hf_name, t in load_file(str(f)).items():
                if hf_name == "lm_head.weight" and tied:
                    continue  # llama.cpp reuses token_embd as the output layer
                gname = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
                if gname is None:
                    raise PetError(f"{model_dir}: no GGUF tensor name for {hf_name!r}")
                arr = to_gguf(model_type, hf_name, t.float().numpy(), hp)
                if arr.ndim == 1 or outtype == "f32":
                    writer.add_tensor(gname, np.ascontiguousarray(arr, dtype=np.float32))
                elif outtype == "f16":
                    writer.add_tensor(gname, np.ascontiguousarray(arr, dtype=np.float16))
                else:
                    q = gguf.quants.quantize(np.ascontiguousarray(arr, dtype=np.float32), gguf.GGMLQuantizationType.Q8_0)
                    writer.add_tensor(gname, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


# -- a LoRA from a full fine-tune ------------------------------------------------------------------------
LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _load_weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise PetError(f"{folder}: no *.safetensors weights")
    out = {}
    for f in files:
        out.update(load_file(str(f)))
    return out


def read_full_run(run_dir: Path) -> tuple[dict, Path, Path]:
    """(config, fine-tuned model folder, base model folder) of a finished --method full run."""
    cfg_path = run_dir / "config.json"
    if not cfg_path.exists():
        raise PetError(f"--run: {run_dir} is not a training run (no config.json)")
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    if cfg.get("method") != "full":
        raise PetError(f"--run: run {run_dir.name} trained a LoRA (method {cfg.get('method', 'lora')!r}); its adapter "
                       f"is {run_dir / 'adapter'}. Only a --method full run has weights to extract an adapter from")
    tuned = run_dir / "model"
    if not (tuned / "config.json").exists():
        raise PetError(f"--run: run {run_dir.name} has no finished model (RUN/model); it was interrupted or "
                       f"cancelled before saving: resume it with `python -m pet train --resume {run_dir.name}`")
    base = Path(cfg["resolved"]["model_folder"])
    if not (base / "config.json").exists():
        raise PetError(f"the base model folder {base} of run {run_dir.name} is gone (a cache that was cleared?): "
                       "train any run on the same tier again to rebuild it")
    return cfg, tuned, base


def energy_by_rank(singular: list, ranks: list[int], total: float) -> dict[int, float]:
    """Share of `total` (squared Frobenius norm) kept by the top r singular values of every matrix, per r."""
    import torch

    kept = {r: 0.0 for r in ranks}
    for s in singular:
        c = torch.cumsum(s.double() ** 2, 0)
        for r in ranks:
            kept[r] += float(c[min(r, len(c)) - 1])
    return {r: (kept[r] / total if total > 0 else 1.0) for r in ranks}


def extract_lora(run_dir: str | Path, rank: int, out: str | Path | None = None,
                 targets: tuple[str, ...] = LINEAR) -> dict:
    """Low-rank extraction of a full fine-tune's weight changes into a normal LoRA adapter (PEFT + GGUF).

    For each adapted weight, the change D = W_tuned - W_base is factored by SVD, D = U S V^T, and its
    best rank-r approximation is kept as B = U_r sqrt(S_r), A = sqrt(S_r) V_r^T, with alpha = r so
    PEFT's and llama.cpp's scale alpha/r is 1. Returns the report: the share of the change's energy
    (squared Frobenius norm) each rank keeps, over the adapted weights and over every changed weight
    (norms, and embeddings if they trained, cannot go into a LoRA).
    """
    import torch

    from pet.adapters import GGUF_FILE, INFO_FILE

    run_dir = Path(run_dir)
    cfg, tuned_dir, base_dir = read_full_run(run_dir)
    tuned, base = _load_weights(tuned_dir), _load_weights(base_dir)
    if rank < 1:
        raise PetError(f"--rank must be >= 1, got {rank}")
    missing = sorted(set(tuned) ^ set(base))
    if missing:
        raise PetError(f"run {run_dir.name}: the fine-tuned and base models have different weights "
                       f"({', '.join(missing[:3])}...): was the base model replaced?")
    factors, singular = {}, []
    total = other = 0.0
    for name in sorted(tuned):
        d = tuned[name].double() - base[name].double()
        e = float((d ** 2).sum())
        total += e
        module = name[:-len(".weight")] if name.endswith(".weight") else name
        if d.ndim != 2 or module.rsplit(".", 1)[-1] not in targets:
            other += e
            continue
        u, s, vh = torch.linalg.svd(d.float(), full_matrices=False)
        singular.append(s)
        k = min(rank, len(s))  # a smaller matrix keeps all of its change; the rest of its rank stays zero
        root = s[:k].sqrt()
        a, b = torch.zeros(rank, d.shape[1]), torch.zeros(d.shape[0], rank)
        a[:k], b[:, :k] = root[:, None] * vh[:k], u[:, :k] * root[None, :]
        factors[module] = (a, b)
    if not factors:
        raise PetError(f"run {run_dir.name}: no {', '.join(targets)} weights to extract")
    max_rank = max(int(s.numel()) for s in singular)
    if rank > max_rank:
        raise PetError(f"--rank {rank}: at most {max_rank} for this model (its largest adapted weight has that "
                       "rank); that rank already keeps all of the change")
    ranks = sorted({r for r in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024) if r <= max_rank} | {rank})
    linear_total = total - other
    on_linear = energy_by_rank(singular, ranks, linear_total)
    report = {"rank": rank, "energy_kept": on_linear[rank] * linear_total / total if total > 0 else 1.0,
              "energy_kept_of_adapted": on_linear[rank],
              "energy_not_adaptable": other / total if total > 0 else 0.0,
              "by_rank": [{"rank": r, "energy_kept_of_adapted": round(on_linear[r], 6),
                           "energy_kept": round(on_linear[r] * linear_total / total, 6) if total > 0 else 1.0}
                          for r in ranks]}
    target = Path(out) if out else run_dir / "adapter"
    _write_peft_lora(target, factors, rank, cfg, run_dir, report)
    write_gguf_adapter(target, target / GGUF_FILE)
    report.update(adapter=str(target), gguf=str(target / GGUF_FILE), info=str(target / INFO_FILE))
    return report


def _write_peft_lora(target: Path, factors: dict, rank: int, cfg: dict, run_dir: Path, report: dict) -> None:
    import shutil

    import torch
    from peft import LoraConfig
    from safetensors.torch import save_file

    from pet.adapters import INFO_FILE

    resolved = cfg["resolved"]
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    modules = sorted({m.rsplit(".", 1)[-1] for m in factors})
    LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, target_modules=modules, bias="none",
               task_type="CAUSAL_LM", base_model_name_or_path=resolved["base"].get("ref")).save_pretrained(tmp)
    tensors = {}
    for module, (a, b) in factors.items():
        tensors[f"base_model.model.{module}.lora_A.weight"] = a.to(torch.bfloat16).contiguous()
        tensors[f"base_model.model.{module}.lora_B.weight"] = b.to(torch.bfloat16).contiguous()
    save_file(tensors, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
    tuned_meta = {}
    if (run_dir / "model" / "pet_model.json").exists():
        tuned_meta = json.loads((run_dir / "model" / "pet_model.json").read_text(encoding="utf-8"))
    base_cfg = json.loads((run_dir / "model" / "config.json").read_text(encoding="utf-8"))
    final = {}
    if (run_dir / "final_eval.json").exists():
        final = json.loads((run_dir / "final_eval.json").read_text(encoding="utf-8"))
    meta = {"name": f"{run_dir.name}-r{rank}", "base": resolved["base"], "method": f"lora-svd-r{rank} of full run",
            "template": resolved.get("template"), "model_type": base_cfg.get("model_type"),
            "model_config": model_config(base_cfg.get("model_type"), base_cfg),
            "system_prompt": resolved.get("system_prompt"), "data_sha256": tuned_meta.get("data_sha256"),
            "data_path": resolved.get("data_path"), "steps": final.get("steps"),
            # The full model's losses: the extracted adapter approximates it (energy_kept says how closely).
            "eval_loss_before": final.get("eval_loss_before"), "eval_loss_after": final.get("eval_loss_after"),
            "lora_r": rank, "lora_alpha": rank, "target_modules": modules, "extraction": report,
            "source_run": str(run_dir), "created": time.time()}
    (tmp / INFO_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")
    old = target.with_name(target.name + f".old{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
