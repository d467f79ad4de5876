"""`python -m pet compare --tiers a,b PROMPT`: one prompt on several tiers, answers and stats."""

from __future__ import annotations

from pet.commands import add, engine


def register(sub) -> None:
    p = add(sub, "compare", cmd_compare, help="run one prompt on several tiers and print each answer with stats")
    p.add_argument("--tiers", required=True, help="comma-separated tier names, e.g. light,enhanced")
    p.add_argument("--seed", type=int, help="random seed shared by every tier")
    p.add_argument("--system", help="system prompt for every tier (default: each tier's own)")
    p.add_argument("--max-tokens", type=int, help="maximum new tokens")
    p.add_argument("--temperature", type=float, help="sampling temperature, 0 = greedy")
    p.add_argument("--no-save", action="store_true", help="do not save the comparison")
    p.add_argument("prompt", help="the rough request or prompt")


def cmd_compare(args) -> int:
    from pet import compare
    from pet.backends.base import stats_line

    eng = engine()
    tiers = [t.strip() for t in args.tiers.split(",") if t.strip()]
    bad = [t for t in tiers if not eng.tiers.known(t)]
    if not tiers or bad:
        args._parser.error(f"argument --tiers: unknown tier(s) {', '.join(bad) or '(none given)'} "
                           f"(choose from {', '.join(eng.tiers.names())})")
    settings = {"seed": args.seed, "max_new_tokens": args.max_tokens, "temperature": args.temperature}
    cols: list[dict] = []
    for cols in compare.stream_columns(eng, tiers, args.prompt, args.system, settings):
        pass
    for col in cols:
        print(f"=== {col['tier']} ===")
        if col["error"]:
            print(f"unavailable: {col['error']}")
        else:
            print(col["text"].strip())
            print(f"--- {stats_line(col['stats'] or {})}")
        print()
    if not args.no_save:
        cid = compare.save(eng.store, args.prompt, args.system, compare.clean_settings(settings), cols)
        print(f"saved comparison {cid}")
    return 0 if any(not c["error"] for c in cols) else 1
