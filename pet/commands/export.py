"""`python -m pet export ollama --tier enhanced --out DIR [--create] [--quantize q4_K_M]`."""

from __future__ import annotations

import json
import sys

from pet.commands import add, engine, tier_arg


def register(sub) -> None:
    p = add(sub, "export", cmd_export, help="export a tier: its LoRA merged into the base, ready for `ollama create`")
    p.add_argument("target", choices=["ollama"], help="ollama: a safetensors folder with a Modelfile")
    p.add_argument("--tier", required=True, help="the tier to export (a llama.cpp or hf tier)")
    p.add_argument("--out", required=True, help="folder to write (new, empty, or an earlier PET export)")
    p.add_argument("--adapter", help="a LoRA folder to use instead of the tier's own (e.g. a run's adapter/)")
    p.add_argument("--name", help="the Ollama model name (default pet-TIER)")
    p.add_argument("--quantize", help="have Ollama quantize on create, e.g. q4_K_M or q8_0")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"],
                   help="precision of the merged weights (default bfloat16)")
    p.add_argument("--create", action="store_true", help="also upload the folder to an Ollama server and create the model")
    p.add_argument("--host", help="Ollama server for --create (default $OLLAMA_HOST or http://127.0.0.1:11434)")
    p.add_argument("--json", action="store_true", help="print the export record as JSON (last line)")


def cmd_export(args) -> int:
    from pet import PetError
    from pet.export import export_ollama, quantize_name

    try:
        quantize_name(args.quantize)
    except PetError as e:
        args._parser.error(str(e))
    eng = engine()
    tier_arg(args._parser, eng, args.tier)
    log = (lambda m: None) if args.json else (lambda m: print(f"... {m}", file=sys.stderr, flush=True))
    rec = export_ollama(eng, args.tier, args.out, adapter=args.adapter, name=args.name, quantize=args.quantize,
                        dtype=args.dtype, create=args.create, host=args.host, log=log)
    if args.json:
        print(json.dumps(rec, ensure_ascii=False))
        return 0
    print(rec["parity"]["message"])
    print(f"exported {args.tier} to {rec['out']}")
    if rec.get("lora_gguf"):
        print(f"  {rec['lora_gguf']}: the LoRA alone, for llama.cpp servers (--lora) on the base GGUF")
    if rec.get("created"):
        print(f"created {rec['name']} on the Ollama server")
    else:
        print(f"next, where Ollama runs: cd {rec['out']} && {rec['command']}")
    return 0
