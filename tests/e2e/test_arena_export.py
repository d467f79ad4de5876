"""Browser: an Arena battle voted "both bad", exported and downloaded (issue 13, item 6).

PET_HOME is outside the system temp folder here, as on a real install: Gradio serves downloads only
from folders it is told about, so an export under PET_HOME must be one of them.
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import MODEL_CACHE, running_app
from tests.e2e.test_arena_tab import TIERS

pytestmark = pytest.mark.e2e


@pytest.fixture
def home_outside_tmp():
    home = Path.home() / ".cache" / "pet-studio-tests" / "homes" / f"arena-export-{id(object())}"
    home.mkdir(parents=True)
    for sub in ("models", "cache"):
        (home / sub).symlink_to(MODEL_CACHE / sub, target_is_directory=True)
    yield home
    shutil.rmtree(home, ignore_errors=True)


def test_both_bad_vote_exported_and_downloaded(home_outside_tmp, page, tmp_path):
    home = home_outside_tmp
    tiers = tmp_path / "tiers.toml"
    tiers.write_text(TIERS)
    with running_app(home, tiers) as url:
        page.goto(url)
        page.get_by_role("tab", name="Arena").click()
        page.locator("#arena-set").get_by_text("Type my own").click()
        page.locator("#arena-prompt textarea").fill("write a poem about autumn")
        page.locator("#arena-new").click()
        page.wait_for_function("() => !document.querySelector('#arena-vote-bothbad').disabled", timeout=120_000)
        page.locator("#arena-vote-bothbad").click()
        page.locator("#arena-reveal").get_by_text("Your vote: both bad").wait_for()
        page.get_by_text("Export votes").click()
        page.locator("#arena-export").click()
        link = page.locator("#arena-export-file a[download]")
        link.wait_for(timeout=30_000)
        with page.expect_download() as dl:
            link.click()
        saved = tmp_path / "battles.jsonl"
        dl.value.save_as(saved)
        rows = [json.loads(line) for line in saved.read_text(encoding="utf-8").splitlines()]
        assert len(rows) == 1 and rows[0]["winner"] == "tie (bothbad)"
        # tier_a/_b are the tier names; model_a/_b the rated identities (tier@weights), as pet/arena.py exports them
        assert {rows[0]["tier_a"], rows[0]["tier_b"]} == {"tersebot", "chattybot"}
        assert {rows[0]["model_a"].split("@")[0], rows[0]["model_b"].split("@")[0]} == {"tersebot", "chattybot"}
        assert rows[0]["conversation_a"][-2]["content"] == "write a poem about autumn"
        # the file was written under PET_HOME/exports, then served
        assert [p.suffix for p in (home / "exports").iterdir()] == [".jsonl"]
        assert urllib.request.urlopen(url, timeout=5).status == 200  # the app is still up
