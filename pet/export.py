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
import shutil
import time
from pathlib import Path

from pet import PetError
from pet.files import atomic_folder, atomic_path

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


def _gguf_adapter_problems(cfg: dict, hp: dict) -> list[str]:
    """Everything in a PEFT config (and the base's record `hp`) that llama.cpp's adapter format cannot hold."""
    problems = []
    if cfg.get("peft_type") != "LORA":
        problems.append(f"peft_type is {cfg.get('peft_type')!r}, only LORA converts")
    if cfg.get("use_dora") or cfg.get("use_rslora"):
        problems.append("DoRA/rsLoRA adapters have no llama.cpp GGUF form; train a plain LoRA")
    if cfg.get("rank_pattern") or cfg.get("alpha_pattern"):
        problems.append("per-layer rank/alpha patterns are not supported by the GGUF adapter format")
    if cfg.get("modules_to_save"):
        problems.append("modules_to_save (fully trained layers) cannot go into a GGUF LoRA adapter")
    arch = hp.get("model_type")
    if arch not in ARCHES:
        problems.append(f"base architecture {arch!r} is not supported (supported: {', '.join(sorted(ARCHES))})")
    elif ARCHES[arch] == "LLAMA" and not all(hp.get(k) for k in HEAD_KEYS):
        problems.append("the base's head counts are unknown (pet_adapter.json has no model_config and the base "
                        "folder has no config.json); retrain the adapter with `python -m pet train`")
    return problems


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
    hp = _adapter_config(peft_dir, cfg)
    arch = hp.get("model_type")
    problems = _gguf_adapter_problems(cfg, hp)
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
    with atomic_path(target) as tmp:  # the one atomic write: a half-written GGUF never replaces a good one
        writer = gguf.GGUFWriter(str(tmp), gguf.MODEL_ARCH_NAMES[march])
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
    with atomic_path(target) as tmp:  # the one atomic write: a half-written GGUF never replaces a good one
        writer = gguf.GGUFWriter(str(tmp), gguf.MODEL_ARCH_NAMES[march])
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
        _add_model_tensors(writer, model_dir, files, gguf.get_tensor_name_map(march, text["num_hidden_layers"]),
                           model_type, hp, config.get("tie_word_embeddings", text.get("tie_word_embeddings", True)),
                           outtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return target


def _add_model_tensors(writer, model_dir: Path, files: list[Path], names, model_type: str, hp: dict, tied: bool,
                       outtype: str) -> None:
    """Every weight of the safetensors files under its GGUF name, in `outtype` (norms and other vectors f32)."""
    import gguf
    import numpy as np
    from safetensors.torch import load_file

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
    import torch
    from peft import LoraConfig
    from safetensors.torch import save_file

    from pet.adapters import INFO_FILE

    resolved = cfg["resolved"]
    modules = sorted({m.rsplit(".", 1)[-1] for m in factors})
    tensors = {}
    for module, (a, b) in factors.items():
        tensors[f"base_model.model.{module}.lora_A.weight"] = a.to(torch.bfloat16).contiguous()
        tensors[f"base_model.model.{module}.lora_B.weight"] = b.to(torch.bfloat16).contiguous()
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
    with atomic_folder(target) as tmp:  # an adapter is replaced whole, or not at all
        LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, target_modules=modules, bias="none",
                   task_type="CAUSAL_LM", base_model_name_or_path=resolved["base"].get("ref")).save_pretrained(tmp)
        save_file(tensors, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
        (tmp / INFO_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")


# -- Ollama ---------------------------------------------------------------------------------------------
# Recent Ollama refuses Modelfiles with ADAPTER (CLI 0.34.1 and later) and its Gemma 3 engine never
# applied safetensors adapters, so PET merges the LoRA into the base and Ollama imports the merged
# weights (`FROM .` on a safetensors folder; it converts Gemma3ForCausalLM and can quantize on create).

QUANTIZE = ("q2_K", "q3_K_S", "q3_K_M", "q3_K_L", "q4_0", "q4_1", "q4_K_S", "q4_K_M", "q5_0", "q5_1",
            "q5_K_S", "q5_K_M", "q6_K", "q8_0")
DTYPES = ("bfloat16", "float32")
MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "tokenizer.model", "special_tokens_map.json")  # what Ollama reads beside model*.safetensors
LORA_GGUF = "lora.gguf"  # the adapter for llama.cpp servers; Ollama ignores it (model*.safetensors win)
PARITY_TURNS = [
    {"role": "user", "content": "improve this prompt: write a poem about the sea"},
    {"role": "assistant", "content": "You are a poet. Write a 12-line poem about the sea at dawn.\n\n"
                                     "Constraints: rhyme ABAB; no clichés."},
    {"role": "user", "content": "shorter, and café style ☕ — add an example 😀"},
    {"role": "assistant", "content": "You are a café poet. Write 4 lines about the sea.\n\nExample: “Salt on the cup…”"},
]


def quantize_name(q: str | None) -> str | None:
    """Ollama's spelling of a quantization type (q4_K_M), or a PetError listing the valid ones."""
    if not q:
        return None
    for name in QUANTIZE:
        if name.lower() == q.lower():
            return name
    raise PetError(f"--quantize {q!r} is not a type Ollama quantizes to; choose one of {', '.join(QUANTIZE)}")


def _first_difference(seqs: dict[str, list[int]], decode) -> dict | None:
    names = list(seqs)
    n = max(len(s) for s in seqs.values())
    for i in range(n):
        vals = {k: (seqs[k][i] if i < len(seqs[k]) else None) for k in names}
        if len(set(vals.values())) > 1:
            return {"index": i, "tokens": {k: {"id": v, "text": decode(v) if v is not None else "(end)",
                                               "before": decode_many(decode, seqs[k][max(0, i - 6):i])}
                                           for k, v in vals.items()}}
    return None


def decode_many(decode, ids: list[int]) -> str:
    return "".join(decode(i) for i in ids)


def parity_check(template, go_template: str, tokenize, bos_id: int | None, add_bos: bool, decode,
                 trainer_tokenizer, system: str) -> dict:
    """One multi-turn conversation with a system prompt, as three renderers see it, as token ids:
    - trainer: the training string (template.training_text) tokenised as the trainer does, up to the
      last answer (what the model saw before it learnt that answer);
    - llama.cpp: PET's prompt for that conversation (template.render with a generation prompt);
    - Ollama: the Modelfile TEMPLATE rendered as Go's text/template renders it, with the BOS token that
      Ollama's tokenizer adds when the exported tokenizer asks for one.
    Returns {"ok", "lengths", "first_difference", "message"}."""
    from pet import gotemplate
    from pet.templates import with_system

    convo = with_system(PARITY_TURNS, system or "You are PET, a prompt engineer.")
    prompt_msgs = convo[:-1]
    text, spans = template.training_text(convo)
    enc = trainer_tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    cut = spans[-1][0]
    trainer = [t for t, (s, _e) in zip(enc["input_ids"], enc["offset_mapping"]) if s < cut]
    cpp = tokenize(template.render(prompt_msgs, add_generation_prompt=True))
    go_text = gotemplate.render(go_template, gotemplate.ollama_values(prompt_msgs))
    ollama = ([bos_id] if add_bos and bos_id is not None else []) + tokenize(go_text)
    seqs = {"trainer": list(trainer), "llama.cpp": list(cpp), "ollama": list(ollama)}
    diff = _first_difference(seqs, decode)
    lengths = {k: len(v) for k, v in seqs.items()}
    if diff is None:
        return {"ok": True, "lengths": lengths, "first_difference": None,
                "message": f"template parity: {lengths['ollama']} identical tokens in all three renderings"}
    parts = [f"{k}: {v['text']!r} (id {v['id']}) after {v['before']!r}" for k, v in diff["tokens"].items()]
    msg = (f"template parity failed at token {diff['index']} of the test conversation: " + "; ".join(parts)
           + ". The Modelfile TEMPLATE would not give the model the prompt it was trained on; export refused.")
    return {"ok": False, "lengths": lengths, "first_difference": diff, "message": msg}


def go_template_for(template) -> str:
    from pet import templates

    fam = templates.family_of(template.source)
    if fam not in templates.OLLAMA:
        raise PetError(f"chat template {template.name!r} has no Ollama TEMPLATE in PET (families with one: "
                       f"{', '.join(templates.OLLAMA)}); set the tier's template to one of them")
    return templates.OLLAMA[fam]


def template_adds_bos(template) -> bool:
    """Does the tier's prompt start with the BOS token? Then the export tells Ollama to add it
    (tokenizer_config.json add_bos_token), since an Ollama TEMPLATE leaves BOS to the tokenizer."""
    text = template.render([{"role": "user", "content": "x"}], add_generation_prompt=True)
    return bool(template.bos_token) and text.startswith(template.bos_token)


def tier_parity(engine, tier: str, go_template: str | None = None) -> dict:
    """The parity check for a tier, with its own template, system prompt and tokenizers."""
    from transformers import AutoTokenizer

    from pet import models

    spec = engine.tiers.spec(tier)
    if spec.backend not in ("llamacpp", "hf"):
        raise PetError(f"tier {tier!r} runs on {spec.backend}: only llama.cpp and hf tiers have local weights to export")
    template = engine.template_for(tier)
    go_template = go_template if go_template is not None else go_template_for(template)
    ref = models.resolve(spec.model, spec.backend, engine.settings.path("models"))
    hf_tok = AutoTokenizer.from_pretrained(models.hf_folder(ref, engine.settings.path("cache", "hf")))
    tokenize = engine.tokenizer_for(tier)  # llama.cpp's tokenizer for a GGUF tier, the tier's own otherwise

    def decode(i: int) -> str:
        return hf_tok.convert_ids_to_tokens(int(i))

    return parity_check(template, go_template, tokenize, hf_tok.bos_token_id, template_adds_bos(template),
                        decode, hf_tok, spec.system_prompt)


def _spm_bytes(tokens: list[str], scores: list[float], types: list[int]) -> bytes:
    """A SentencePiece ModelProto (protobuf wire format) holding the vocabulary, BPE with byte fallback.

    Ollama builds a Gemma model's vocabulary from tokenizer.model when the folder has one, and would
    otherwise read tokenizer.json as a GPT-2 style BPE, which is wrong for Gemma's SentencePiece."""
    import struct

    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            b = n & 0x7F
            n >>= 7
            out.append(b | (0x80 if n else 0))
            if not n:
                return bytes(out)

    def field(num: int, wire: int) -> bytes:
        return varint((num << 3) | wire)

    def ld(num: int, payload: bytes) -> bytes:
        return field(num, 2) + varint(len(payload)) + payload

    out = bytearray()
    for tok, score, typ in zip(tokens, scores, types):
        piece = ld(1, tok.encode("utf-8")) + field(2, 5) + struct.pack("<f", float(score)) + field(3, 0) + varint(int(typ))
        out += ld(1, piece)
    # trainer_spec: model_type BPE (2), byte_fallback true; normalizer_spec: identity, no dummy prefix,
    # whitespace escaped as "▁" (Gemma 3's settings).
    trainer = field(3, 0) + varint(2) + field(35, 0) + varint(1)
    normalizer = ld(1, b"identity") + field(3, 0) + varint(0) + field(4, 0) + varint(0) + field(5, 0) + varint(1)
    out += ld(2, trainer) + ld(3, normalizer)
    return bytes(out)


def write_spm_from_gguf(gguf_path: Path, target: Path) -> Path | None:
    """tokenizer.model from a GGUF's SentencePiece ("llama") vocabulary; None for other tokenizers."""
    import gguf

    r = gguf.GGUFReader(str(gguf_path))
    model = r.fields.get("tokenizer.ggml.model")
    if model is None or bytes(model.parts[-1]).decode() != "llama":
        return None
    toks_f, scores_f, types_f = (r.fields[k] for k in ("tokenizer.ggml.tokens", "tokenizer.ggml.scores",
                                                       "tokenizer.ggml.token_type"))
    tokens = [bytes(toks_f.parts[i]).decode("utf-8", errors="replace") for i in toks_f.data]
    scores = [float(scores_f.parts[i][0]) for i in scores_f.data]
    types = [int(types_f.parts[i][0]) for i in types_f.data]
    target.write_bytes(_spm_bytes(tokens, scores, types))
    return target


def merge_adapter(base_folder: str, adapter_dir: str | None, out: Path, dtype: str = "bfloat16") -> Path:
    """The base with the LoRA merged in (PEFT merge_and_unload on the dequantised base), saved as
    safetensors with its tokenizer: a folder transformers and Ollama's importer both read."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype not in DTYPES:
        raise PetError(f"dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    model = AutoModelForCausalLM.from_pretrained(base_folder, dtype=torch.float32)
    if adapter_dir:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    model = model.to(getattr(torch, dtype))
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out, safe_serialization=True, max_shard_size="20GB")
    AutoTokenizer.from_pretrained(base_folder).save_pretrained(out)
    (out / "adapter_config.json").unlink(missing_ok=True)
    return out


def set_bos(config: Path, add_bos: bool) -> None:
    """Say explicitly whether to add BOS: Ollama's importer writes add_bos_token=false when the key is
    missing, and a Gemma prompt without BOS is not the prompt the model was trained on."""
    cfg = json.loads(config.read_text(encoding="utf-8"))
    cfg["add_bos_token"], cfg["add_eos_token"] = add_bos, False
    for key in ("is_local", "local_files_only"):  # transformers' load-time notes, not tokenizer settings
        cfg.pop(key, None)
    config.write_text(json.dumps(cfg, indent=2, ensure_ascii=False), encoding="utf-8")


def modelfile_text(go_template: str, system: str, params, stops: tuple[str, ...]) -> str:
    for what, text in (("system prompt", system), ("template", go_template)):
        if '"""' in text:
            raise PetError(f'the {what} contains """, which a Modelfile cannot quote; remove it to export')
    lines = ["# Written by PET Studio: the tier's merged weights (safetensors) in this folder.",
             "FROM .", f'TEMPLATE """{go_template}"""']
    if system:
        lines.append(f'SYSTEM """{system}"""')
    lines += [f"PARAMETER temperature {params.temperature}", f"PARAMETER top_p {params.top_p}",
              f"PARAMETER top_k {params.top_k}", f"PARAMETER num_ctx {params.n_ctx}",
              f"PARAMETER repeat_penalty {params.repeat_penalty}"]
    lines += [f'PARAMETER stop "{s}"' for s in stops]
    return "\n".join(lines) + "\n"


def ollama_parameters(params, stops: tuple[str, ...]) -> dict:
    """The Modelfile's PARAMETERs as the create API takes them."""
    return {"temperature": params.temperature, "top_p": params.top_p, "top_k": params.top_k,
            "num_ctx": params.n_ctx, "repeat_penalty": params.repeat_penalty, "stop": list(stops)}


def export_ollama(engine, tier: str, out: str | Path, adapter: str | None = None, name: str | None = None,
                  quantize: str | None = None, dtype: str = "bfloat16", create: bool = False,
                  host: str | None = None, log=lambda msg: None) -> dict:
    """Export a tier (its adapter merged into its base) as a folder `ollama create` imports.

    `adapter` replaces the tier's own (e.g. a training run's). Refuses, changing nothing, when the
    template parity check fails. With create=True the folder is also uploaded to an Ollama server."""
    from pet import models
    from pet.adapters import base_identity, check_base, read_adapter

    quantize = quantize_name(quantize)
    spec, out = _export_target(engine, tier, out, dtype)
    name = name or f"pet-{tier}"
    template = engine.template_for(tier)
    go = go_template_for(template)
    stops = tuple(s for s in template.stop if s)
    log("checking template parity (trainer, llama.cpp, Ollama TEMPLATE)")
    parity = tier_parity(engine, tier, go)
    if not parity["ok"]:
        raise PetError(parity["message"])
    ref = models.resolve(spec.model, spec.backend, engine.settings.path("models"))
    base_folder = models.hf_folder(ref, engine.settings.path("cache", "hf"))
    info = None
    adapter_path = adapter or spec.adapter
    if adapter_path:
        info = read_adapter(adapter_path)
        check_base(info, base_identity(ref.ref, ref.path))
    with atomic_folder(out) as tmp:  # an earlier export is replaced whole, or not at all
        log(f"merging {'the adapter into ' if info else ''}the base model ({dtype})")
        merge_adapter(base_folder, str(info.path) if info else None, tmp, dtype)
        set_bos(tmp / "tokenizer_config.json", template_adds_bos(template))
        if ref.path is not None and ref.path.suffix == ".gguf":
            write_spm_from_gguf(ref.path, tmp / "tokenizer.model")
        elif (Path(base_folder) / "tokenizer.model").exists():
            shutil.copy2(Path(base_folder) / "tokenizer.model", tmp / "tokenizer.model")
        if info:
            log("writing the LoRA as a GGUF adapter for llama.cpp servers")
            write_gguf_adapter(info.path, tmp / LORA_GGUF)
        (tmp / "Modelfile").write_text(modelfile_text(go, spec.system_prompt, spec.params, stops), encoding="utf-8")
        record = {"name": name, "tier": tier, "base": spec.model, "adapter": str(info.path) if info else None,
                  "dtype": dtype, "quantize": quantize, "template": template.name, "parity": parity,
                  "files": _model_digests(tmp), "lora_gguf": LORA_GGUF if info else None,
                  "command": f"ollama create {name} -f Modelfile" + (f" --quantize {quantize}" if quantize else "")}
        record["pet_side"] = pet_side_note(spec.params)
        (tmp / "pet_export.json").write_text(json.dumps(record, indent=2, ensure_ascii=False), encoding="utf-8")
    record["out"] = str(out)
    if create:
        log(f"creating {name} on the Ollama server")
        record["created"] = create_on_ollama(out, record, go, spec.system_prompt,
                                             ollama_parameters(spec.params, stops), host)
    return record


def pet_side_note(params) -> str:
    """What the tier's answers get from PET's own decoding that a Modelfile cannot carry ("" if nothing)."""
    done = [what for on, what in ((params.loop_guard, "its loop guard"),
                                  (params.drop_avoid, 'leaving out its "Avoid:" lines'),
                                  (params.echo_request, "the request word for word after the role line"),
                                  (params.fewshot, f"{params.fewshot} retrieved examples"),
                                  (params.best_of > 1, f"best of {params.best_of}")) if on]
    if not done:
        return ""
    return ("Ollama serves the model without PET's decoding: " + ", ".join(done) + ". Served by PET (its "
            "Ollama-compatible API included), the tier keeps them.")


def _export_target(engine, tier: str, out: str | Path, dtype: str):
    """(the tier's spec, the export folder), refusing what cannot be exported before any work is done."""
    if dtype not in DTYPES:
        raise PetError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    spec = engine.tiers.spec(tier)
    if spec.backend not in ("llamacpp", "hf"):
        raise PetError(f"tier {tier!r} runs on {spec.backend}: only llama.cpp and hf tiers have local weights to export")
    out = Path(out).expanduser()
    if out.exists() and any(out.iterdir()) and not (out / "pet_export.json").exists():
        raise PetError(f"{out} exists and is not an earlier PET export: choose an empty or new folder")
    return spec, out


def _model_digests(folder: Path) -> dict:
    """sha256 of each file Ollama's create imports (the weights, then MODEL_FILES), by name."""
    from pet.adapters import file_sha256

    files = sorted(p.name for p in folder.iterdir() if p.name.startswith("model") and p.suffix == ".safetensors")
    files += [f for f in MODEL_FILES if (folder / f).exists()]
    return {f: "sha256:" + file_sha256(folder / f) for f in files}


def create_on_ollama(folder: Path, record: dict, go_template: str, system: str, parameters: dict,
                     host: str | None = None) -> list[str]:
    """Upload the folder's files as blobs and call the create API (files + template, system and
    parameters, as the Ollama CLI sends them for `FROM .`). Returns the server's status lines."""
    import ollama

    from pet.backends.ollama import DEFAULT_HOST, explain

    host = host or os.environ.get("OLLAMA_HOST") or DEFAULT_HOST
    client = ollama.Client(host=host, timeout=None)
    statuses = []
    try:
        files = {}
        for f, digest in record["files"].items():
            got = client.create_blob(folder / f)
            if got != digest:
                raise PetError(f"{folder / f} changed since the export (sha256 {got} != {digest}): export again")
            files[f] = got
        for part in client.create(model=record["name"], files=files, template=go_template, system=system or None,
                                  parameters=parameters, quantize=record.get("quantize"), stream=True):
            if part.status:
                statuses.append(part.status)
    except PetError:
        raise
    except Exception as e:  # every client failure: say what happened and how to finish by hand
        why = explain(e, record["name"], host)
        raise PetError(f"{why}. The export itself is complete in {folder}: run `{record['command']}` there "
                       "where Ollama runs") from None
    if not statuses or statuses[-1] != "success":
        raise PetError(f"Ollama at {host} did not confirm the create of {record['name']} "
                       f"(last status: {statuses[-1] if statuses else 'none'})")
    return statuses


def export_choice(engine, tier: str | None = None, run_id: str | None = None, quantize: str | None = None,
                  name: str | None = None) -> dict:
    """What the Export buttons do: a tier as it is, or a finished run's adapter on the tier it trained
    on, to PET_HOME/exports/<name>."""
    adapter = None
    if run_id:
        from pet.train import jobs

        run = jobs.info(jobs.runs_dir(engine.settings.home) / run_id)
        if run["state"] not in ("finished", "cancelled") or not run["adapter"]:
            raise PetError(f"run {run_id} is {run['state']} and has no finished adapter to export")
        tier = (run.get("config") or {}).get("tier") or tier
        adapter = run["adapter"]
        name = name or f"pet-{tier}-{run_id}"
    if not tier:
        raise PetError("choose a tier to export")
    name = name or f"pet-{tier}"
    if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise PetError(f"model name {name!r}: use letters, digits, '-', '_' and '.' only")
    out = engine.settings.path("exports") / name
    return export_ollama(engine, tier, out, adapter=adapter, name=name, quantize=quantize)
