"""`python -m pet train`: fine-tune a LoRA adapter in the foreground (the Train tab runs the same command)."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path

from pet.commands import add

# Flags are built from TrainConfig's fields, so a flag and a setting cannot drift apart.
_TYPES = {"float": float, "int": int, "str": str, "int | None": int, "str | None": str, "float | None": float}
_CHOICES = {"device": ["auto", "cpu", "cuda"], "precision": ["auto", "bf16", "fp32"], "method": ["lora", "full"]}


def register(sub) -> None:
    from pet.train.trainer import TrainConfig, config_fields

    p = add(sub, "train", cmd_train, help="fine-tune a LoRA adapter on PET's examples (runs in the foreground)")
    src = p.add_mutually_exclusive_group()
    length = p.add_mutually_exclusive_group()
    data = p.add_mutually_exclusive_group()
    data.add_argument("--version", type=int, default=None, metavar="N",
                      help="train on this saved dataset version (see `python -m pet data versions`); "
                           "default: the latest, the one the Data tab and `pet data import` saved last")
    defaults = TrainConfig()
    for f in config_fields():
        flag = "--" + f.name.replace("_", "-")
        help_ = f.metadata["help"].replace("%", "%%")  # argparse formats help with %
        default = getattr(defaults, f.name)
        if default not in (None, False):
            help_ += f" (default: {default})"
        group = (src if f.name in ("tier", "base") else length if f.name in ("epochs", "max_steps")
                 else data if f.name == "data" else p)
        if f.type in ("bool",):
            group.add_argument(flag, action="store_true", default=None, help=help_)
        elif f.name in _CHOICES:
            group.add_argument(flag, choices=_CHOICES[f.name], default=None, help=help_)
        else:
            group.add_argument(flag, type=_TYPES[f.type], default=None, metavar=f.name.upper(), help=help_)
    p.add_argument("--resume", metavar="RUN_ID", help="continue an interrupted, cancelled or failed run from its last "
                   "checkpoint, with its own settings (a run id under PET_HOME/runs, or a run folder)")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last stdout line")
    # After the summary the process ends at once (see pet/__main__.py): nothing is left to write.
    p.set_defaults(hard_exit=True)


def config_from_args(args):
    from pet.train.trainer import TrainConfig, config_fields

    kw = {f.name: getattr(args, f.name) for f in config_fields() if getattr(args, f.name, None) is not None}
    if getattr(args, "resume", None) and kw:
        flags = ", ".join("--" + k.replace("_", "-") for k in kw)
        args._parser.error(f"argument --resume: a resumed run keeps its own settings; leave out {flags}")
    if kw.get("base"):
        kw["tier"] = None
    if kw.get("max_steps"):
        kw.setdefault("epochs", TrainConfig.epochs)
    cfg = TrainConfig(**kw)
    problems = cfg.problems()
    if problems:
        # Name the flag, not the field: "argument --lora-r: must be ..."
        msgs = []
        for p in problems:
            name, _, why = p.partition(": ")
            flags = " / ".join("--" + n.replace("_", "-") for n in name.split("/"))
            msgs.append(f"argument {flags}: {why}")
        args._parser.error("; ".join(msgs))
    return cfg


def dataset_version_file(cfg, version: int | None, store, runs: Path):
    """Freeze a saved dataset version (default: the latest) into the run folder as the --data file.

    Returns the config pointing at that file (and at its run folder) and the version used."""
    from pet.dataset import write_atomic
    from pet.datastore import DatasetStore
    from pet.train.trainer import new_run_id

    ds = DatasetStore(store)
    v = ds.latest() if version is None else int(version)
    examples = ds.get(v)  # an unknown version: PetError listing the versions there are
    run_dir = Path(cfg.out) if cfg.out else runs / new_run_id()
    path = write_atomic(run_dir / "examples.jsonl",
                        "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in examples))
    return replace(cfg, data=str(path), out=str(run_dir)), v, len(examples)


def cmd_train(args) -> int:
    from pet.commands import engine
    from pet.train.trainer import resume, train

    quiet = bool(os.environ.get("PET_TRAIN_QUIET"))
    cfg = config_from_args(args)
    if args.resume:
        if args.version is not None:
            args._parser.error("argument --resume: a resumed run keeps its own examples; leave out --version")
        summary = resume(args.resume, quiet=quiet)
    else:
        eng = engine() if cfg.tier or cfg.data is None else None
        if cfg.tier:
            from pet.commands import tier_arg

            tier_arg(args._parser, eng, cfg.tier)
        if args.version is not None and args.version < 1:
            args._parser.error(f"argument --version: must be a version number >= 1, got {args.version}")
        if cfg.data is None:
            cfg, v, n = dataset_version_file(cfg, args.version, eng.store, eng.settings.path("runs"))
            print(f"training on dataset version {v} ({n} examples); choose another with --version N or --data FILE",
                  file=sys.stderr)
        summary = train(cfg, quiet=quiet)
    if args.json:
        print(json.dumps(summary))
    else:
        print(summary_text(summary))
    return 0 if summary["status"] == "finished" else 130


def summary_text(s: dict) -> str:
    loss = ("no held-out loss" if s["eval_loss_before"] is None
            else f"held-out loss {s['eval_loss_before']:.4f} -> {s['eval_loss_after']:.4f}")
    lines = [f"{s['status']}: {s['steps']} steps, {loss}, {s['train_tokens_per_s'] or 0:.0f} tokens/s"]
    if s.get("note"):
        lines.append(f"note: {s['note']}")
    if s.get("adapter"):
        lines.append(f"adapter: {s['adapter']}")
    if s.get("model"):
        lines.append(f"model: {s['model']}")
    if s.get("gguf"):
        lines.append(f"gguf: {s['gguf']}")
    if s.get("method") == "full":
        lines.append(f"adapter from it: python -m pet export lora --run {s['run_dir']} --rank 32")
    return "\n".join(lines)
