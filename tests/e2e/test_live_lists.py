"""Lists that follow the app's state while the page is open (issue 8, items 12 and 13):
- a tier added from the Train tab appears in the Chat tier list, the Compare checkboxes (and the other
  tier lists) without a reload, and after one;
- the Train tab's dataset list shows versions saved elsewhere as they are saved, the newest selected."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from pet.datastore import DatasetStore
from pet.store import Store
from pet.train.trainer import new_run_id
from tests.conftest import REPO, home_with_tiers, running_app, tiny_hf_tier
from tests.test_trainer import make_examples

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def tiny_app(tmp_path_factory):
    """The app on a tiny model, with one finished 1-step run whose adapter can become a tier."""
    root = tmp_path_factory.mktemp("live-lists")
    home, tiers = home_with_tiers(root, tiny_hf_tier(root))
    data = root / "examples.jsonl"
    data.write_text("".join(json.dumps(e) + "\n" for e in make_examples()))
    run_id = new_run_id()
    env = dict(os.environ, PET_HOME=str(home), PET_TIERS=str(tiers))
    r = subprocess.run([sys.executable, "-m", "pet", "train", "--tier", "tiny", "--data", str(data), "--max-steps",
                        "1", "--out", str(home / "runs" / run_id)], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    with running_app(home, tiers) as url:
        yield home, url, run_id


def _chat_options(page) -> list[str]:
    page.get_by_role("tab", name="Chat").click()
    page.locator("#chat-tier input").click()
    page.get_by_role("option").first.wait_for()
    names = [o.inner_text().replace("✓", "").strip() for o in page.get_by_role("option").all()]
    page.keyboard.press("Escape")
    return names


def _wait_chat_options(page, want: list[str], timeout_s: float = 15.0) -> None:
    """The Chat tier list becomes `want`. A fresh page shows the list the app was built with until its load
    event brings the current one (under a busy CI that takes more than the instant a person needs)."""
    deadline = time.monotonic() + timeout_s
    names = _chat_options(page)
    while names != want and time.monotonic() < deadline:
        page.wait_for_timeout(500)
        names = _chat_options(page)
    assert names == want


def test_a_tier_added_in_the_train_tab_appears_in_every_tier_list(tiny_app, page):
    home, url, run_id = tiny_app
    page.goto(url)
    assert _chat_options(page) == ["tiny"]
    page.get_by_role("tab", name="Train").click()
    page.locator("#train-result").get_by_text(f"Run {run_id} finished").wait_for(timeout=30_000)
    page.get_by_label("or add it as a new tier named").fill("tiny-ft")
    page.locator("#train-add-tier").click()
    page.get_by_text("Tier tiny-ft now uses the adapter").first.wait_for(timeout=15_000)

    # Live, without a reload:
    _wait_chat_options(page, ["tiny", "tiny-ft"])  # within a refresh period or two
    page.get_by_role("tab", name="Compare").click()
    page.locator("#compare-tiers").get_by_label("tiny-ft").wait_for(timeout=10_000)
    # After a reload too:
    page.reload()
    page.wait_for_selector("#chat-tier input")
    _wait_chat_options(page, ["tiny", "tiny-ft"])
    page.get_by_role("tab", name="Compare").click()
    page.locator("#compare-tiers").get_by_label("tiny-ft").wait_for(timeout=10_000)
    page.get_by_role("tab", name="Arena").click()
    page.locator("#arena-judge-tier input").click()
    page.get_by_role("option", name="tiny-ft", exact=True).wait_for()


def _version_shown(page) -> str:
    return page.locator("#train-data input").input_value()


def test_the_dataset_list_follows_saved_versions(tiny_app, page):
    home, url, _ = tiny_app
    ds = DatasetStore(Store(home / "pet.db"))
    first = ds.latest()
    page.goto(url)
    page.get_by_role("tab", name="Train").click()
    page.wait_for_function("v => document.querySelector('#train-data input').value.startsWith(v)",
                           arg=f"v{first} ")
    v2 = ds.add(make_examples(12), "twelve more")
    # A version saved elsewhere (the Data tab, the CLI) shows up and is selected, without a click.
    page.wait_for_function("v => document.querySelector('#train-data input').value.startsWith(v)",
                           arg=f"v{v2} ", timeout=15_000)
    page.reload()
    page.get_by_role("tab", name="Train").click()
    page.wait_for_function("v => document.querySelector('#train-data input').value.startsWith(v)",
                           arg=f"v{v2} ", timeout=15_000)
    # An older version you chose stays chosen when a newer one is saved.
    page.locator("#train-data input").click()
    page.get_by_role("option", name=f"v{first} ").first.click()
    assert _version_shown(page).startswith(f"v{first} ")
    v3 = ds.add(make_examples(3), "three more")
    page.locator("#train-data input").click()
    page.get_by_role("option", name=f"v{v3} ").first.wait_for(timeout=15_000)
    page.keyboard.press("Escape")
    assert _version_shown(page).startswith(f"v{first} ")
