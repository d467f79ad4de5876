"""Benchmark commands.

    python -m pet bench [--tiers a,b] [--split heldout|FILE] [--limit N] [--judge TIER] [--quick] [--json]
    python -m pet bench speed --tier light [--json]          decode tokens/s and TTFT of one tier
    python -m pet bench score "PROMPT" [--request R] [--json] the PET score of any prompt
    python -m pet bench calibrate [--data FILE] [--json]      the score's AUC: references vs rough requests
    python -m pet bench runs [--json]                         stored runs; same group letter = comparable
"""

from __future__ import annotations

import json
import sys
import time

from pet import PetError
from pet.commands import add, engine, tier_arg


def register(sub) -> None:
    p = add(sub, "bench", cmd_bench, help="benchmark the tiers: prompt quality and speed, with intervals",
            description="Run every tier over the held-out examples (or a JSONL of prompts) and report the PET "
                        "score, judged win rate, similarity and loss against the references, speed and answer "
                        "hygiene, with paired bootstrap intervals between tiers. Each run is stored.")
    p.add_argument("--tiers", help="comma-separated tiers (default: every tier that can run here)")
    p.add_argument("--split", default="heldout",
                   help="heldout (the held-out examples) or a JSONL file: {\"prompt\", \"reference\"?} or "
                        "{\"messages\": [...]} per line")
    p.add_argument("--limit", type=int, help="run only the first N prompts")
    p.add_argument("--judge", help="tier (or ollama:MODEL) that judges each answer against the reference")
    p.add_argument("--quick", action="store_true",
                   help=f"a fixed subset of held-out prompts: PET score, speed and hygiene only, no judge")
    p.add_argument("--pairs", help="tiers to compare as A:B,C:D (default: enhanced:base,enhanced:light)")
    p.add_argument("--max-tokens", type=int, help="maximum new tokens per answer (default: each tier's own)")
    p.add_argument("--seed", type=int, default=0, help="generation seed (default 0)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object (last line)")
    sp = p.add_subparsers(dest="what", metavar="{speed,score,calibrate,runs}", parser_class=type(p))
    sp.required = False

    s = add(sp, "speed", cmd_speed, help="decode tokens/s and TTFT of one tier")
    s.add_argument("--tier", required=True)
    s.add_argument("--prompt", default="improve this prompt: write a short story about a lighthouse keeper")
    s.add_argument("--max-tokens", type=int, default=128)
    s.add_argument("--json", action="store_true", help="print the result as JSON (last line)")

    s = add(sp, "score", cmd_score, help="the PET score of a prompt, its breakdown and suggestions")
    s.add_argument("prompt", help="the prompt to score ('-' reads it from stdin)")
    s.add_argument("--request", help="the rough request it was written for (enables the drift penalty)")
    s.add_argument("--json", action="store_true")

    s = add(sp, "calibrate", cmd_calibrate, help="how well the PET score separates references from rough requests")
    s.add_argument("--data", help="examples file (default: data/pet_examples.jsonl)")
    s.add_argument("--json", action="store_true")

    s = add(sp, "runs", cmd_runs, help="stored benchmark runs, newest first")
    s.add_argument("--limit", type=int, default=20)
    s.add_argument("--json", action="store_true")


# -- the quality benchmark ----------------------------------------------------------------------------

class Bar:
    """A progress bar with an ETA on stderr: redrawn in place on a terminal, a line every 10 s otherwise."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.last = 0.0

    def __call__(self, p) -> None:
        now = time.monotonic()
        final = p.fraction >= 1.0
        if not self.tty and not final and now - self.last < 10:
            return
        self.last = now
        filled = int(p.fraction * 24)
        text = f"[{'#' * filled}{'-' * (24 - filled)}] {p.line()}"
        if self.tty:
            self.stream.write("\r\033[K" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


def _config(args, eng):
    from pet.benchmark import BenchConfig, parse_pairs

    tiers = [t.strip() for t in (args.tiers or "").split(",") if t.strip()]
    try:
        pairs = parse_pairs(args.pairs)
    except PetError as e:
        args._parser.error(f"argument {e}")
    cfg = BenchConfig(tiers=tiers, split=args.split, limit=args.limit, judge=args.judge, quick=args.quick,
                      pairs=pairs, seed=args.seed, max_new_tokens=args.max_tokens)
    problems = cfg.problems(eng)
    if problems:
        args._parser.error("; ".join(f"argument {p}" for p in problems))
    return cfg


def cmd_bench(args) -> int:
    from pet import benchmark

    eng = engine()
    cfg = _config(args, eng)
    res = benchmark.run(eng, cfg, progress=Bar())
    if args.json:
        print(json.dumps(benchmark.summary_json(res)))
        return 0
    print(f"run {res['run_id']}: {res['n_prompts']} prompts ({res['source']}), judge: {res['judge'] or 'none'}, "
          f"{res['elapsed_s']:.0f} s")
    print()
    print(benchmark.tier_table(res))
    if res["comparisons"]:
        print()
        print(benchmark.comparison_table(res))
    for s in res["skipped"]:
        print(f"skipped {s['tier']}: {s['reason']}")
    for t in res["tiers"]:
        if t.get("loss_note"):
            print(f"no reference loss for {t['tier']}: {t['loss_note']}")
    return 0


# -- the rest --------------------------------------------------------------------------------------------

def cmd_speed(args) -> int:
    from pet.bench import speed

    eng = engine()
    tier_arg(args._parser, eng, args.tier)
    res = speed(eng, args.tier, args.prompt, args.max_tokens)
    if args.json:
        print(json.dumps(res))
    else:
        print(f"{res['tier']}: {res['tokens']} tokens, {res['tok_s']:.1f} tok/s, TTFT {res['ttft_s']:.3f} s")
    return 0


def cmd_score(args) -> int:
    from pet.score import score_prompt

    text = sys.stdin.read() if args.prompt == "-" else args.prompt
    if not text.strip():
        args._parser.error("argument prompt: the prompt is empty")
    s = score_prompt(text, args.request)
    if args.json:
        print(json.dumps(s.as_dict()))
        return 0
    print(f"PET score: {s.total:.0f}/100")
    for row in s.breakdown():
        pts = f"{row['points']:+.1f}" if row["max"] == 0 else f"{row['points']:.0f}/{row['max']}"
        print(f"  {row['part']:<28} {pts:>7}  {row['why']}")
    if s.suggestions:
        print("To improve it:")
        for t in s.suggestions:
            print(f"  - {t}")
    return 0


def cmd_calibrate(args) -> int:
    from pet import dataset, score

    path = args.data or dataset.SHIPPED
    try:
        examples = dataset.read_jsonl(path)
    except (OSError, ValueError) as e:
        raise PetError(f"cannot read {path}: {e}") from None
    try:
        res = score.calibrate(examples)
        _, held = dataset.split(examples)
        res["heldout"] = score.calibrate(held) if held else None
    except ValueError as e:
        raise PetError(f"{path}: {e}") from None
    res["data"] = str(path)
    if args.json:
        print(json.dumps(res))
        return 0
    print(f"{res['examples']} examples in {path}: AUC {res['auc']:.3f} (references over rough requests); "
          f"median score {res['median_reference']:.0f} for references vs {res['median_request']:.0f} for requests; "
          f"{res['references_flagged_answering']} references flagged as answering")
    if res["heldout"]:
        h = res["heldout"]
        print(f"held-out split ({h['examples']}): AUC {h['auc']:.3f}, medians {h['median_reference']:.0f} vs "
              f"{h['median_request']:.0f}")
    return 0


def cmd_runs(args) -> int:
    import datetime as dt

    from pet import benchmark

    eng = engine()
    rows = benchmark.runs(eng.store, args.limit)
    if args.json:
        print(json.dumps([{k: r[k] for k in ("run_id", "created", "group", "source", "n_prompts", "judge", "quick",
                                             "prompts_sha", "elapsed_s")}
                          | {"tiers": [t["tier"] for t in r["tiers"]]} for r in rows]))
        return 0
    if not rows:
        print("no benchmark runs yet: run `python -m pet bench --quick`")
        return 0
    print("runs with the same group letter ran the same prompts with the same judge: they are comparable")
    for r in rows:
        when = dt.datetime.fromtimestamp(r["created"]).strftime("%Y-%m-%d %H:%M")
        tiers = ", ".join(f"{t['tier']} {t['pet_score']:.1f}" for t in r["tiers"] if t.get("pet_score") is not None)
        print(f"{r['group']:>2}  {r['run_id']}  {when}  {r['n_prompts']:>3} prompts  judge {r['judge'] or '-':<10} "
              f"{'quick ' if r['quick'] else ''}PET score: {tiers}")
    return 0
