"""Train tab in a real browser, on a tiny model so a run takes seconds: start, live progress and loss
curve, one job at a time, reload and find the job again, cancel, then add the adapter as a new tier."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import make_home, start_app, stop_app
from tests.test_trainer import make_tiny_model

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def train_app(tmp_path_factory):
    root = tmp_path_factory.mktemp("train-tab")
    make_tiny_model(root / "tiny")
    tiers = root / "tiers.toml"
    tiers.write_text('[tiers.tiny]\nbackend = "hf"\nmodel = "./tiny"\nsystem_prompt = "Be PET."\n')
    home = make_home(root / "home")
    proc, url = start_app(home, extra_env={"PET_TIERS": str(tiers)})
    yield home, url
    stop_app(proc)


def _open_tab(page, url):
    page.goto(url)
    page.get_by_role("tab", name="Train").click()
    page.locator("#train-start").wait_for()


def _progress(page) -> str:
    return page.locator("#train-progress-text").inner_text()


def test_start_watch_reload_cancel(train_app, page):
    home, url = train_app
    _open_tab(page, url)
    page.get_by_text("Hyperparameters").click()
    steps = page.locator("#train-max-steps input")
    steps.fill("100000")  # long enough to still be running when we reload and cancel
    steps.press("Tab")
    page.locator("#train-start").click()
    page.wait_for_function(
        "() => /running · step [1-9]/.test(document.querySelector('#train-progress-text')?.innerText || '')",
        timeout=90_000)
    run_id = re.search(r"run (\S+)", _progress(page)).group(1)
    assert (home / "runs" / run_id / "metrics.jsonl").exists()
    # The live loss curve has points.
    page.wait_for_function("() => { const p = document.querySelector('#train-plot .js-plotly-plot');"
                           " return p && p.data && p.data[0].x.length > 0 }", timeout=30_000)

    # A second Start is refused, naming the running job.
    page.locator("#train-start").click()
    page.get_by_text(f"training job {run_id} is still running").first.wait_for(timeout=15_000)

    # Reload: the page finds the running job again.
    page.reload()
    page.get_by_role("tab", name="Train").click()
    page.wait_for_function(
        "id => (document.querySelector('#train-progress-text')?.innerText || '').includes('run ' + id + ' · running')",
        arg=run_id, timeout=30_000)

    page.locator("#train-cancel").click()
    page.wait_for_function(
        "() => (document.querySelector('#train-progress-box')?.dataset.state) === 'cancelled'", timeout=30_000)
    status = json.loads((home / "runs" / run_id / "status.json").read_text())
    assert status["state"] == "cancelled"
    assert (home / "runs" / run_id / "adapter" / "adapter_model.safetensors").exists()

    # The cancelled run's adapter becomes a new tier, saved so a restart keeps it.
    page.locator("#train-add-tier").wait_for()
    page.get_by_label("or add it as a new tier named").fill("tiny-ft")
    page.locator("#train-add-tier").click()
    page.get_by_text("Tier tiny-ft now uses the adapter").first.wait_for(timeout=15_000)
    overlay = (home / "tiers.local.toml").read_text()
    assert "[tiers.tiny-ft]" in overlay and f"runs/{run_id}/adapter" in overlay
