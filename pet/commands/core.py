"""Core commands: tiers, chat, serve, bench."""

from __future__ import annotations

import json
import sys

from pet.commands import add, engine, tier_arg


def register(sub) -> None:
    p = add(sub, "tiers", cmd_tiers, help="list the tiers and whether each can run here")
    p.add_argument("--json", action="store_true", help="print a JSON list")

    p = add(sub, "chat", cmd_chat, help="stream one tier's answer to a prompt")
    p.add_argument("--tier", required=True, help="tier name (see `python -m pet tiers`)")
    p.add_argument("--system", help="system prompt (default: the tier's own; '' for none)")
    p.add_argument("--max-tokens", type=int, help="maximum new tokens")
    p.add_argument("--temperature", type=float, help="sampling temperature, 0 = greedy")
    p.add_argument("--seed", type=int, help="random seed, for reproducible answers")
    p.add_argument("--stats", action="store_true", help="print TTFT, tokens/s and tokens to stderr")
    p.add_argument("prompt", help="the rough request or prompt to improve")

    p = add(sub, "serve", cmd_serve, help="start the web app")
    p.add_argument("--host", help="address to bind (default 127.0.0.1, or PET_HOST)")
    p.add_argument("--port", type=int, help="port (default 7860, or PET_PORT)")
    p.add_argument("--auth", help="USER:PASS to protect the UI (or PET_AUTH)")

    p = add(sub, "bench", cmd_bench, help="benchmarks")
    p.add_argument("what", choices=["speed"], help="speed: decode tokens/s and TTFT of one tier")
    p.add_argument("--tier", required=True)
    p.add_argument("--prompt", default="improve this prompt: write a short story about a lighthouse keeper")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--json", action="store_true", help="print the result as JSON (last line)")


def cmd_tiers(args) -> int:
    rows = engine().tier_status()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        mark = "ok " if r["available"] else "-- "
        print(f"{mark}{r['name']:<10} {r['backend']:<9} {r['model']}")
        if not r["available"]:
            print(f"           unavailable: {r['reason']}")
    return 0


FLAGS = {"max_new_tokens": "--max-tokens", "temperature": "--temperature", "seed": "--seed"}


def _params(eng, args):
    from pet.config import ConfigError

    try:
        return eng.params_for(args.tier, max_new_tokens=args.max_tokens, temperature=args.temperature,
                              seed=args.seed)
    except ConfigError as e:
        msgs = []
        for p in e.problems:
            field, _, why = p.partition(": ")
            msgs.append(f"argument {FLAGS.get(field.split('.')[-1], field)}: {why}")
        args._parser.error("; ".join(msgs))


def cmd_chat(args) -> int:
    eng = engine()
    tier_arg(args._parser, eng, args.tier)
    params = _params(eng, args)
    last = None
    for chunk in eng.stream(args.tier, [{"role": "user", "content": args.prompt}], params, system=args.system):
        if chunk.notice and last is None:
            print(f"note: {chunk.notice}", file=sys.stderr)
        sys.stdout.write(chunk.text)
        sys.stdout.flush()
        last = chunk
    sys.stdout.write("\n")
    if args.stats and last is not None:
        from pet.backends.base import Stats

        st = Stats(last.tokens, last.ttft_s, last.elapsed_s, last.finish_reason)
        print(st.line(), file=sys.stderr)
    return 0


def cmd_serve(args) -> int:
    from pet.config import ConfigError, Settings

    try:
        auth = Settings.parse_auth(args.auth)
    except ConfigError as e:
        args._parser.error(e.problems[0])
    if args.port is not None and not 0 < args.port < 65536:
        args._parser.error(f"argument --port: must be 1-65535, got {args.port}")
    settings = Settings.from_env(host=args.host, port=args.port, auth=auth)
    import pages  # the UI lives outside the engine package

    pages.launch(settings)
    return 0


def cmd_bench(args) -> int:
    from pet.bench import speed

    eng = engine()
    tier_arg(args._parser, eng, args.tier)
    res = speed(eng, args.tier, args.prompt, args.max_tokens)
    if args.json:
        print(json.dumps(res))
    else:
        print(f"{res['tier']}: {res['tokens']} tokens, {res['tok_s']:.1f} tok/s, TTFT {res['ttft_s']:.3f} s")
    return 0
