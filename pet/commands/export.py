"""`python -m pet export ...`: a tier for Ollama, a LoRA adapter from a full fine-tune (SVD), GGUF for llama.cpp."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pet.commands import add, engine, tier_arg


def register(sub) -> None:
    p = add(sub, "export", lambda args: args._parser.print_help() or 2,
            help="ship a tier or a training run: Ollama (merged model + Modelfile), a LoRA from a full "
                 "fine-tune, GGUF for llama.cpp")
    esub = p.add_subparsers(dest="what", metavar="WHAT")

    ol = add(esub, "ollama", cmd_ollama,
             help="a tier's LoRA merged into the base: a safetensors folder with a Modelfile, ready for `ollama create`")
    ol.add_argument("--tier", required=True, help="the tier to export (a llama.cpp or hf tier)")
    ol.add_argument("--out", required=True, help="folder to write (new, empty, or an earlier PET export)")
    ol.add_argument("--adapter", help="a LoRA folder to use instead of the tier's own (e.g. a run's adapter/)")
    ol.add_argument("--name", help="the Ollama model name (default pet-TIER)")
    ol.add_argument("--quantize", help="have Ollama quantize on create, e.g. q4_K_M or q8_0")
    ol.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"],
                    help="precision of the merged weights (default bfloat16)")
    ol.add_argument("--create", action="store_true", help="also upload the folder to an Ollama server and create the model")
    ol.add_argument("--host", help="Ollama server for --create (default $OLLAMA_HOST or http://127.0.0.1:11434)")
    ol.add_argument("--json", action="store_true", help="print the export record as JSON (last line)")

    lo = add(esub, "lora", cmd_lora, help="low-rank (SVD) extraction of a --method full run's weight changes "
                                          "into a LoRA adapter (PEFT + GGUF), with the energy each rank keeps")
    lo.add_argument("--run", required=True, metavar="RUN_ID", help="a run id under PET_HOME/runs, or a run folder")
    lo.add_argument("--rank", required=True, type=int, metavar="R", help="the adapter's rank (e.g. 16, 32, 64)")
    lo.add_argument("--out", metavar="DIR", help="adapter folder (default: RUN/adapter, which the Train tab offers)")
    lo.add_argument("--json", action="store_true", help="print the report as JSON")

    gg = add(esub, "gguf", cmd_gguf, help="write a --method full run's model as a GGUF that llama.cpp serves")
    gg.add_argument("--run", required=True, metavar="RUN_ID", help="a run id under PET_HOME/runs, or a run folder")
    gg.add_argument("--outtype", choices=["f16", "f32", "q8_0"], default="f16", help="weight type (default: f16)")
    gg.add_argument("--out", metavar="FILE", help="GGUF file (default: RUN/model.gguf)")


def cmd_ollama(args) -> int:
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
    if rec.get("pet_side"):
        print(f"note: {rec['pet_side']}")
    if rec.get("created"):
        print(f"created {rec['name']} on the Ollama server")
    else:
        print(f"next, where Ollama runs: cd {rec['out']} && {rec['command']}")
    return 0


def _run_dir(args) -> Path:
    from pet.config import Settings
    from pet.train.checkpoint import find_run

    return find_run(args.run, Settings.from_env().path("runs"), flag="--run")


def cmd_lora(args) -> int:
    from pet.export import extract_lora

    if args.rank < 1:
        args._parser.error(f"argument --rank: must be >= 1, got {args.rank}")
    report = extract_lora(_run_dir(args), args.rank, args.out)
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"LoRA rank {report['rank']} from run {Path(args.run).name}: keeps {report['energy_kept']:.1%} of the "
          f"weight change's energy ({report['energy_kept_of_adapted']:.1%} of the adaptable layers'; "
          f"{report['energy_not_adaptable']:.2%} is in weights a LoRA cannot hold: norms, embeddings)")
    print("rank  energy kept (all changes / adaptable layers)")
    for row in report["by_rank"]:
        print(f"{row['rank']:>4}  {row['energy_kept']:.1%} / {row['energy_kept_of_adapted']:.1%}")
    print(f"adapter: {report['adapter']}\ngguf: {report['gguf']}")
    return 0


def cmd_gguf(args) -> int:
    from pet.export import read_full_run, write_gguf_model

    run = _run_dir(args)
    cfg, tuned, _base = read_full_run(run)
    from pet import templates

    name = cfg["resolved"].get("template", "")
    own = tuned / "chat_template.jinja"  # a model's own template, saved with its tokenizer
    chat = templates.BUILTIN[name].source if name in templates.BUILTIN else (
        own.read_text(encoding="utf-8") if own.exists() else None)
    target = Path(args.out) if args.out else run / "model.gguf"
    write_gguf_model(tuned, target, tokenizer_gguf=cfg["resolved"].get("model_file"), chat_template=chat,
                     name=f"PET full fine-tune {run.name}", outtype=args.outtype)
    print(f"gguf: {target}")
    return 0
