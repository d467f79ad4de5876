"""The README's instructions work as written (issue 8, item 19): every upload example imports in the
format it illustrates, and the port can be chosen the ways it says."""

from __future__ import annotations

import re

from pet.config import REPO_ROOT, Settings
from pet.dataset import FORMATS, parse_bytes

README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
EXT = {"jsonl": "x.jsonl", "json": "x.json", "text": "x.txt", "csv": "x.csv"}


def _section(title: str) -> str:
    start = README.index(f"## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end if end > 0 else None]


def test_every_upload_format_has_its_fields_and_an_example_that_imports():
    section = _section("Upload formats")
    blocks = re.findall(r"```(\w+)\n(.*?)```", section, re.S)
    got = []
    for lang, body in blocks:
        res = parse_bytes(body.encode(), EXT[lang])
        assert res.ok and not res.warnings, (lang, [str(p) for p in res.errors + res.warnings])
        assert len(res.examples) == 1
        got.append(res.format)
    assert got == list(FORMATS)  # messages, alpaca, sharegpt, chatml, csv: one example each, in that order
    for field in ("messages", "instruction", "output", "conversations", "from", "value", "<|im_start|>",
                  "domain", "techniques", "split", "--request-column"):
        assert field in section, field


def test_the_port_can_be_chosen_as_the_readme_says(monkeypatch, tmp_path):
    from pet.cli import build_parser

    assert "PET_PORT=8000 python app.py" in README and "python -m pet serve --port 8000" in README
    monkeypatch.setenv("PET_PORT", "8000")
    assert Settings.from_env(home=tmp_path).port == 8000
    monkeypatch.delenv("PET_PORT")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "8001")
    assert Settings.from_env(home=tmp_path).port == 8001
    assert build_parser().parse_args(["serve", "--port", "8000"]).port == 8000
