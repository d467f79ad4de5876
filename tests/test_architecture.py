"""ARCHITECTURE.md stays true: every module and test file it names exists, and pet/ never imports gradio."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_path_the_map_names_exists():
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    paths = set(re.findall(r"`((?:pet|pages|tests)/[\w/]+\.py)`", text))
    assert len(paths) > 30
    assert sorted(p for p in paths if not (ROOT / p).is_file()) == []


def test_calls_go_one_way():
    """No gradio anywhere in pet/; only the CLI's `serve` (the top layer, beside pages/) starts the web app."""
    def importing(pattern: str) -> list[str]:
        return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "pet").rglob("*.py")
                      if re.search(rf"^\s*(import|from) {pattern}\b", p.read_text(encoding="utf-8"), re.M))

    assert importing("gradio") == []
    assert all(p.startswith("pet/commands/") or p == "pet/cli.py" for p in importing("pages")), importing("pages")
