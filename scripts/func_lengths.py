"""Functions longer than N lines (default 60) in PET's own code: pet/, pages/, bench/, scripts/ and app.py.

    python3 scripts/func_lengths.py [N]

A function's length is ast's end_lineno - lineno + 1, so a nested function counts inside its parent too
(the issue's measure). Prints "lines path name", longest first.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def sources(root: Path = ROOT) -> list[Path]:
    return [*sorted((root / "pet").rglob("*.py")), *sorted((root / "pages").rglob("*.py")),
            *sorted((root / "bench").glob("*.py")), *sorted((root / "scripts").glob("*.py")), root / "app.py"]


def long_functions(limit: int = 60, root: Path = ROOT) -> list[tuple[int, str, str]]:
    """(lines, path relative to root, qualified name) of every function over `limit` lines."""
    out = []
    for path in sources(root):
        out += [(n, str(path.relative_to(root)), name)
                for n, name in _lengths(ast.parse(path.read_text(encoding="utf-8"))) if n > limit]
    return sorted(out, key=lambda r: (-r[0], r[1], r[2]))


def _lengths(tree: ast.AST, prefix: str = ""):
    for node in ast.iter_child_nodes(tree):
        name = prefix
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            name = f"{prefix}{node.name}"
            if not isinstance(node, ast.ClassDef):
                yield node.end_lineno - node.lineno + 1, name
            name += "."
        yield from _lengths(node, name)


def main(argv: list[str]) -> int:
    limit = int(argv[0]) if argv else 60
    rows = long_functions(limit)
    for n, path, name in rows:
        print(f"{n:5d}  {path}  {name}")
    print(f"{len(rows)} function(s) over {limit} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
