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
            writer.add_tensor(f"{name}.weight.lora_a", np.ascontiguousarray(ab["A"], dtype=np.float16))
            writer.add_tensor(f"{name}.weight.lora_b", np.ascontiguousarray(ab["B"], dtype=np.float16))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


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
    import hashlib
    import shutil

    from pet import models
    from pet.adapters import base_identity, check_base, read_adapter

    quantize = quantize_name(quantize)
    if dtype not in DTYPES:
        raise PetError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    spec = engine.tiers.spec(tier)
    if spec.backend not in ("llamacpp", "hf"):
        raise PetError(f"tier {tier!r} runs on {spec.backend}: only llama.cpp and hf tiers have local weights to export")
    out = Path(out).expanduser()
    if out.exists() and any(out.iterdir()) and not (out / "pet_export.json").exists():
        raise PetError(f"{out} exists and is not an earlier PET export: choose an empty or new folder")
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
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
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
        files = sorted(p.name for p in tmp.iterdir() if p.name.startswith("model") and p.suffix == ".safetensors")
        files += [f for f in MODEL_FILES if (tmp / f).exists()]
        digests = {}
        for f in files:
            h = hashlib.sha256()
            with (tmp / f).open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            digests[f] = "sha256:" + h.hexdigest()
        record = {"name": name, "tier": tier, "base": spec.model, "adapter": str(info.path) if info else None,
                  "dtype": dtype, "quantize": quantize, "template": template.name, "parity": parity,
                  "files": digests, "lora_gguf": LORA_GGUF if info else None,
                  "command": f"ollama create {name} -f Modelfile" + (f" --quantize {quantize}" if quantize else "")}
        (tmp / "pet_export.json").write_text(json.dumps(record, indent=2, ensure_ascii=False), encoding="utf-8")
        shutil.rmtree(out, ignore_errors=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    record["out"] = str(out)
    if create:
        log(f"creating {name} on the Ollama server")
        record["created"] = create_on_ollama(out, record, go, spec.system_prompt,
                                             ollama_parameters(spec.params, stops), host)
    return record


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
