"""`python -m pet data ...`: exit codes, messages, and never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pet.cli import main
from pet.dataset import SHIPPED, parse_file, read_jsonl
from tests.conftest import make_home

REPO = Path(__file__).resolve().parent.parent
FIX = REPO / "tests" / "fixtures" / "data"


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    h = make_home(tmp_path / "home")
    monkeypatch.setenv("PET_HOME", str(h))
    return h


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_validate_good_file(home, capsys):
    rc, out, err = run(capsys, "data", "validate", str(FIX / "sharegpt.json"))
    assert (rc, out) == (0, "ok: 3 example(s) in sharegpt format, 0 warning(s)\n")


def test_validate_bad_file_lists_every_problem(home, capsys):
    rc, out, err = run(capsys, "data", "validate", str(FIX / "bad.jsonl"))
    assert rc == 1 and out == ""
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert lines == [
        "error: row 2, messages[1].content: empty answer: write the text or delete the message",
        "error: row 3, messages[1].role: unknown role 'bot': use system, user or assistant",
        "error: row 4, messages[2].role: expected 'user' here, got 'assistant': turns must alternate "
        "user/assistant, starting with user",
        "error: row 5, messages: must be a list of {role, content} objects, got text",
        "error: row 6, messages[0].content: content must be text, got number",
        "error: row 7, json: bad JSON at line 7, column 51: a comma is missing between two items, or the line ends before its } or ]."]
    assert err.rstrip().endswith("bad.jsonl: cannot be imported: 6 problem(s)")


def test_validate_json_and_warnings(home, capsys, tmp_path):
    p = tmp_path / "dup.jsonl"
    rows = read_jsonl(FIX / "messages.jsonl")
    p.write_text("".join(json.dumps(r) + "\n" for r in rows + rows[:1]))
    rc, out, _ = run(capsys, "data", "validate", str(p), "--json")
    res = json.loads(out)
    assert rc == 0 and res["ok"] and res["examples"] == 4 and res["errors"] == []
    assert res["warnings"] == [{"row": 4, "field": "messages",
                                "message": "duplicate request: same first user turn as row 1"}]
    rc, out, _ = run(capsys, "data", "validate", str(p))
    assert rc == 0 and out.splitlines() == [
        "warning: row 4, messages: duplicate request: same first user turn as row 1",
        "ok: 4 example(s) in messages format, 1 warning(s)"]


def test_validate_format_override_and_bad_flags(home, capsys):
    rc, _, err = run(capsys, "data", "validate", str(FIX / "messages.jsonl"), "--format", "alpaca")
    assert rc == 1 and "row 1, instruction: missing (reading this file as alpaca" in err
    with pytest.raises(SystemExit) as e:
        main(["data", "validate", str(FIX / "messages.jsonl"), "--format", "yaml"])
    assert e.value.code == 2
    assert "invalid choice: 'yaml'" in capsys.readouterr().err
    rc, _, err = run(capsys, "data", "validate", str(FIX / "nope.jsonl"))
    assert rc == 1 and err.strip().endswith("nope.jsonl: no such file")


def test_import_export_versions_restore(home, capsys, tmp_path):
    shipped = len(read_jsonl(SHIPPED)) if SHIPPED.exists() else 0
    rc, out, _ = run(capsys, "data", "import", str(FIX / "prompts.csv"))
    assert rc == 0 and out == (f"version 2: imported 3 from prompts.csv (csv); the dataset now has {shipped + 3} "
                               "example(s)\n")
    rc, _, err = run(capsys, "data", "import", str(FIX / "bad.jsonl"))
    assert rc == 1 and "6 problem(s), nothing was written" in err
    rc, out, _ = run(capsys, "data", "versions", "--json")
    assert [v["id"] for v in json.loads(out)] == [2, 1]
    for fmt in ("jsonl", "alpaca", "sharegpt", "csv"):
        dest = tmp_path / f"out.{fmt}"
        rc, out, _ = run(capsys, "data", "export", "--format", fmt, "--out", str(dest), "--version", "2")
        assert rc == 0 and out == f"wrote {shipped + 3} example(s) of version 2 as {fmt} to {dest}\n"
    # every format reads back as the same examples, the shipped multi-turn refinements included
    # (CSV keeps the earlier turns in its `history` column)
    for fmt in ("alpaca", "sharegpt", "csv"):
        assert parse_file(tmp_path / f"out.{fmt}").examples == read_jsonl(tmp_path / "out.jsonl")
    assert read_jsonl(tmp_path / "out.jsonl")[-1]["messages"][0]["content"] == "i need sql for customers who " \
        "stopped buying"
    assert run(capsys, "data", "name", "1", "shipped")[0] == 0
    rc, out, _ = run(capsys, "data", "restore", "shipped")
    assert rc == 0 and out == f"version 3: restored version 1 ({shipped} examples); nothing was deleted\n"
    rc, _, err = run(capsys, "data", "restore", "42")
    assert rc == 1 and err.startswith("error: no version 42 in dataset 'default'")
    rc, out, _ = run(capsys, "data", "versions")
    assert out.splitlines()[0].split()[0] == "3" and "[shipped]" in out.splitlines()[-1]


def test_stats_json(home, capsys):
    run(capsys, "data", "import", str(FIX / "messages.jsonl"), "--replace")
    rc, out, _ = run(capsys, "data", "stats", "--json")
    st = json.loads(out)
    assert rc == 0 and st["examples"] == 3 and st["version"] == 2
    assert st["domains"] == {"creative": 1, "business": 1, "technical": 1}
    assert st["techniques"] == {"role": 3, "negative_constraints": 1, "output_format": 1, "context": 1}
    tok = st["tokens"]
    # Counted as the trainer sees them: the enhanced tier's short system prompt (about 55 tokens) included.
    assert tok["exact"] is True and 100 < tok["min"] <= tok["median"] <= tok["p90"] <= tok["max"] < 320
    assert sum(b["count"] for b in tok["histogram"]) == 3


def test_subprocess_exit_codes_and_no_traceback(home, tmp_path):
    env = dict(os.environ, PET_HOME=str(home))
    binary = tmp_path / "model.gguf"
    binary.write_bytes(b"GGUF" + bytes(2000))
    cases = [([str(FIX / "chatml.txt")], 0), ([str(binary)], 1), ([str(FIX / "bad.jsonl")], 1)]
    for args, code in cases:
        p = subprocess.run([sys.executable, "-m", "pet", "data", "validate", *args], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == code, p.stderr
        assert "Traceback" not in p.stdout + p.stderr
    assert "binary file (not text)" in subprocess.run(
        [sys.executable, "-m", "pet", "data", "validate", str(binary)], cwd=REPO, env=env, capture_output=True,
        text=True, timeout=120).stderr


# --- the shipped examples (data/pet_examples.jsonl, curated for this project) ---

DOMAINS = ("business", "technical", "creative", "analytical", "educational", "planning", "personal")
TECHNIQUES = ("role", "context", "constraints", "output_format", "step_by_step", "few_shot", "negative_constraints",
              "self_check", "audience_tone", "success_criteria")


@pytest.mark.skipif(not SHIPPED.exists(), reason="data/pet_examples.jsonl not written yet")
def test_shipped_examples_validate_with_no_errors_or_warnings(home, capsys):
    rc, out, _ = run(capsys, "data", "validate", str(SHIPPED), "--json")
    res = json.loads(out)
    assert rc == 0 and res["errors"] == [] and res["warnings"] == [] and res["examples"] >= 200


@pytest.mark.skipif(not SHIPPED.exists(), reason="data/pet_examples.jsonl not written yet")
def test_shipped_stats_show_the_tag_balance(home, capsys):
    rc, out, _ = run(capsys, "data", "stats", "--json")
    st = json.loads(out)
    rows = read_jsonl(SHIPPED)
    assert rc == 0 and st["examples"] == len(rows) >= 200
    for dom in DOMAINS:
        assert st["domains"].get(dom, 0) >= 10, f"domain {dom}: {st['domains'].get(dom, 0)} examples"
    for tech in TECHNIQUES:
        assert st["techniques"].get(tech, 0) >= 10, f"technique {tech}: {st['techniques'].get(tech, 0)} examples"
    assert sum(st["domains"].values()) == len(rows)
    assert 0.05 <= st["heldout"] / st["examples"] <= 0.16  # the fixed ~10% held-out split
    # Counted with the tier's system prompt, as the trainer sees them: every example fits the cutoff.
    assert st["tokens"]["exact"] and st["tokens"]["max"] < st["tokens"]["cutoff"] and st["tokens"]["over_cutoff"] == 0


@pytest.mark.skipif(not SHIPPED.exists(), reason="data/pet_examples.jsonl not written yet")
def test_every_shipped_example_fits_the_training_cutoff(engine):
    """Each example, with the enhanced tier's system prompt as the trainer adds it, fits max_seq_len whole."""
    from pet.dataset import MAX_SEQ_LEN
    from pet.templates import with_system

    tok, tmpl = engine.tokenizer_for("enhanced"), engine.template_for("enhanced")
    system = engine.tiers.spec("enhanced").system_prompt
    too_long = [(i, n) for i, e in enumerate(read_jsonl(SHIPPED), 1)
                if (n := len(tok(tmpl.render(with_system(e["messages"], system), add_generation_prompt=False))))
                >= MAX_SEQ_LEN]
    assert too_long == []


def test_import_good_rows_only_and_chosen_csv_columns(home, capsys, tmp_path):
    """Issue 8, item 16, from the CLI: --skip-bad imports the good rows and lists the skipped ones;
    --request-column/--answer-column read a CSV with any header."""
    rc, _, err = run(capsys, "data", "import", str(FIX / "bad.jsonl"))
    assert rc == 1 and "1 good row(s) could be imported alone: add --skip-bad" in err
    rc, out, err = run(capsys, "data", "import", str(FIX / "bad.jsonl"), "--skip-bad")
    assert rc == 0 and "version 2: imported 1 from bad.jsonl (skipped 6 bad row(s))" in out
    assert err.count("skipped: row ") == 6
    odd = tmp_path / "odd.csv"
    odd.write_text("c1,c2\nwrite a limerick,You are a comic poet. Write a limerick.\n")
    rc, _, err = run(capsys, "data", "validate", str(odd))
    assert rc == 1 and "no request column found" in err
    rc, out, _ = run(capsys, "data", "import", str(odd), "--request-column", "c1", "--answer-column", "c2")
    assert rc == 0 and "version 3: imported 1 from odd.csv" in out
    from pet.datastore import DatasetStore
    from pet.store import Store

    last = DatasetStore(Store(home / "pet.db")).get(3)[-1]
    assert last["messages"][0]["content"] == "write a limerick"
