"""Core commands: tiers, chat, serve (the benchmarks live in pet/commands/bench.py)."""

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
    p.add_argument("--auth", help="USER:PASS to protect the UI and the Ollama API (or PET_AUTH)")
    p.add_argument("--ollama-port", type=int, nargs="?", const=11434, metavar="PORT",
                   help="also serve the tiers over Ollama's API on PORT (11434 when no PORT is given)")
    p.add_argument("--no-ui", action="store_true", help="serve only the Ollama API (on --ollama-port, default 11434)")


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

        print(Stats.of(last).line(), file=sys.stderr)
    return 0


def cmd_serve(args) -> int:
    from pet.config import ConfigError, Settings

    try:
        auth = Settings.parse_auth(args.auth)
    except ConfigError as e:
        args._parser.error(e.problems[0])
    for flag, port in (("--port", args.port), ("--ollama-port", args.ollama_port)):
        if port is not None and not 0 < port < 65536:
            args._parser.error(f"argument {flag}: must be 1-65535, got {port}")
    settings = Settings.from_env(host=args.host, port=args.port, auth=auth)
    ollama_port = args.ollama_port or (11434 if args.no_ui else None)
    if ollama_port is None:
        import pages  # the UI lives outside the engine package

        pages.launch(settings)
        return 0
    from pet.engine import Engine
    from pet.serve_ollama import OllamaServer

    eng = Engine(settings)
    api = OllamaServer(eng, settings.host, ollama_port, settings.auth)
    print(f"Ollama API: {api.url} (tiers: {', '.join(t + ':latest' for t in eng.tiers.names())})", flush=True)
    if args.no_ui:
        api.serve_forever()
        return 0
    api.start()
    import pages

    try:
        pages.launch(settings, engine=eng)
    finally:
        api.stop()
    return 0
