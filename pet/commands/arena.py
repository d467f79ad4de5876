"""`python -m pet arena ...`: ratings from the votes (or a battles file) and vote export."""

from __future__ import annotations

import json
from pathlib import Path

from pet.commands import add


def register(sub) -> None:
    p = add(sub, "arena", lambda args: args._parser.print_help() or 2, help="blind-battle ratings and vote export")
    asub = p.add_subparsers(dest="arena_command", metavar="ARENA_COMMAND")

    r = add(asub, "ratings", cmd_ratings, help="Bradley-Terry ratings with 95%% bootstrap intervals")
    r.add_argument("--votes", metavar="FILE", help="rate an arena battles JSONL file instead of the database "
                   "(the database is not touched)")
    r.add_argument("--json", action="store_true", help="print a JSON list: tier, rating, ci_low, ci_high, battles, rank")
    r.add_argument("--rounds", type=int, default=1000, help="bootstrap rounds (>= 1; default 1000)")
    r.add_argument("--include-judges", action="store_true", help="count auto-judge votes too (default: humans only)")
    r.add_argument("--seed", type=int, default=0, help="bootstrap random seed (default 0)")

    j = add(asub, "judge", cmd_judge, help="let a tier judge human-voted battles (both orders; disagreement = tie)")
    j.add_argument("--tier", required=True, help="the judging tier (see `python -m pet tiers`), or ollama:MODEL")
    j.add_argument("--limit", type=int, default=10, help="at most this many battles (default 10)")

    e = add(asub, "export", cmd_export, help="write the votes as JSONL")
    e.add_argument("--format", required=True, choices=["battles", "preferences"],
                   help="battles: model_a/model_b/winner/conversations; preferences: prompt/chosen/rejected (DPO)")
    e.add_argument("--out", required=True, metavar="PATH", help="the JSONL file to write")
    e.add_argument("--include-judges", action="store_true", help="export auto-judge votes too")


def _db_votes(include_judges: bool) -> list[dict]:
    from pet import arena
    from pet.engine import Engine

    return arena.votes(Engine().store, None if include_judges else "human")


def _current() -> dict[str, str]:
    """Each tier's model identity now, so the table can say which rated models a tier has replaced."""
    from pet import arena
    from pet.engine import Engine

    eng = Engine()
    return {t: arena.model_key(t, arena.identity(eng, t)) for t in eng.tiers.names()}


def cmd_ratings(args) -> int:
    from pet import arena

    if args.rounds < 1:
        args._parser.error(f"argument --rounds: must be >= 1, got {args.rounds}")
    if args.votes:
        if not Path(args.votes).is_file():
            args._parser.error(f"argument --votes: {args.votes} is not a file")
        rows = arena.read_battles(args.votes, include_judges=args.include_judges)
    else:
        rows = _db_votes(args.include_judges)
    res = arena.ratings(rows, rounds=args.rounds, seed=args.seed, current=None if args.votes else _current())
    if args.json:
        print(json.dumps(res["table"], indent=2))
        return 0
    if not res["table"]:
        print("no votes yet: judge some battles in the Arena tab (or pass --votes FILE)")
        return 0
    width = max(16, *(len(r["label"]) for r in res["table"]))
    print(f"{'rank':>4}  {'tier':<{width}} {'rating':>7}  {'95% interval':<17} {'battles':>7}")
    for row in res["table"]:
        ci = f"{row['ci_low']:.0f} .. {row['ci_high']:.0f}" if row["enough_votes"] else "too few votes"
        print(f"{row['rank']:>4}  {row['label']:<{width}} {row['rating']:>7.1f}  {ci:<17} {row['battles']:>7}")
    pb = res["position_bias"]
    if pb["decisive"]:
        print(f"left side won {pb['rate']:.0%} of {pb['decisive']} decisive votes "
              f"(95% interval {pb['ci_low']:.0%} .. {pb['ci_high']:.0%})")
    nxt = res["next_pair"]
    if nxt:
        print(f"judge next: {nxt['tier_a']} vs {nxt['tier_b']}")
    print(f"{res['votes']} votes, {res['rounds']} bootstrap rounds")
    return 0


def cmd_judge(args) -> int:
    from pet import arena
    from pet.commands import tier_arg
    from pet.engine import Engine

    eng = Engine()
    tier_arg(args._parser, eng, args.tier)
    if args.limit < 1:
        args._parser.error(f"argument --limit: must be >= 1, got {args.limit}")
    ids = arena.unjudged(eng.store, args.tier, args.limit)
    if not ids:
        print(f"no human-voted battle is waiting for judge {args.tier}")
    for bid in ids:
        r = arena.judge_battle(eng, bid, args.tier)
        print(f"{bid[:8]}: {r['winner']}" + (f" ({r['note']})" if r["note"] else ""))
    return 0


def cmd_export(args) -> int:
    from pet import arena

    n = arena.export(_db_votes(args.include_judges), args.format, args.out)
    print(f"wrote {n} {args.format} line(s) to {args.out}")
    return 0
