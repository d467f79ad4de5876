"""`python -m pet <command>`: every capability also works without the browser.

Each command group lives in pet/commands/<group>.py and exposes `register(subparsers)`;
a command's handler gets the parsed args (its own parser as `args._parser`, for
`args._parser.error(...)`) and returns an exit code. Errors a user can fix
(PetError) print one clear message and exit 1; bad flags exit 2 with the valid choices;
nothing prints a traceback unless PET_DEBUG=1.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from pet import PetError

# Command groups, in the order `python -m pet --help` lists them.
GROUPS = ("core", "data", "arena", "compare", "train", "bench", "export")


class Parser(argparse.ArgumentParser):
    """argparse that exits 2 with the message (its default), never a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m pet", description="PET Studio: turn rough requests into well-built prompts.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for group in GROUPS:
        importlib.import_module(f"pet.commands.{group}").register(sub)
    return parser


# Set by main() when the command asks the process to end as soon as it returns (pet/__main__.py).
hard_exit = False


def main(argv: list[str] | None = None) -> int:
    global hard_exit
    parser = build_parser()
    args = parser.parse_args(argv)
    hard_exit = bool(getattr(args, "hard_exit", False))
    try:
        return int(args.func(args) or 0)
    except PetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # last resort: one line, not a traceback
        if os.environ.get("PET_DEBUG"):
            raise
        print(f"error: unexpected {type(e).__name__}: {e} (set PET_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
