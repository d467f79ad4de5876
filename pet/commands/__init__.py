"""CLI command groups; each module exposes register(subparsers)."""

from __future__ import annotations

import argparse


def engine():
    from pet.engine import Engine

    return Engine()


def add(sub, name: str, func, **kw) -> argparse.ArgumentParser:
    p = sub.add_parser(name, **kw)
    p.set_defaults(func=func, _parser=p)
    return p


def tier_arg(parser: argparse.ArgumentParser, eng, name: str) -> str:
    """Validate a --tier value against the tiers file: exit 2 listing the valid tiers."""
    from pet.tiers import ADHOC_PREFIX

    names = eng.tiers.names()
    if not eng.tiers.known(name):
        parser.error(f"argument --tier: unknown tier {name!r} (choose from {', '.join(names)}, "
                     f"or {ADHOC_PREFIX}MODEL for any Ollama model)")
    return name
