"""Train tab in a real browser, on a tiny model so a run takes seconds: start, live progress and loss
curve, one job at a time, reload and find the job again, cancel, then add the adapter as a new tier;
resume a killed run with the Resume button while the run history follows it live."""

from __future__ import annotations

import json
import os
import re
import signal
import time

import pytest

from tests.conftest import home_with_tiers, running_app, tiny_hf_tier

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def train_app(tmp_path_factory):
    root = tmp_path_factory.mktemp("train-tab")
    home, tiers = home_with_tiers(root, tiny_hf_tier(root))
    with running_app(home, tiers) as url:
        yield home, url


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
        "() => /running · training · step [1-9]/.test(document.querySelector('#train-progress-text')?.innerText || '')",
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


def test_resume_a_killed_run(train_app, page):
    from pet.train import jobs
    from pet.train.checkpoint import step_of
    from pet.train.trainer import TrainConfig

    home, url = train_app
    while jobs.active(home):  # the previous test's job, if it is still stopping
        time.sleep(0.5)
    cfg = TrainConfig(tier="tiny", max_steps=6, eval_every=3, save_every=1)
    run_id = jobs.start(home, cfg, tiers_path=home.parent / "tiers.toml")
    run_dir = jobs.runs_dir(home) / run_id
    deadline = time.monotonic() + 300
    while (step_of(run_dir) or 0) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(json.loads((run_dir / "status.json").read_text())["pid"], signal.SIGKILL)
    while jobs.info(run_dir)["state"] != "interrupted" and time.monotonic() < deadline:
        time.sleep(0.1)

    _open_tab(page, url)
    page.get_by_text("Run history").click()
    # The history table's row for this run (Gradio also renders hidden copies of the cells, so read text).
    row_js = ("([id, want]) => [...document.querySelectorAll('#train-history tr')]"
              ".some(tr => tr.textContent.includes(id) && tr.textContent.includes(want))")
    page.wait_for_function(row_js, arg=[run_id, "interrupted"], timeout=30_000)
    page.locator("#train-pick input, #train-pick textarea").first.fill(run_id)
    page.get_by_role("button", name="Show", exact=True).click()
    page.wait_for_function(
        "() => (document.querySelector('#train-progress-box')?.dataset.state) === 'interrupted'", timeout=30_000)
    page.locator("#train-resume").click()
    page.get_by_text(f"Resuming run {run_id} from its last checkpoint").first.wait_for(timeout=15_000)
    page.wait_for_function(
        "() => (document.querySelector('#train-progress-box')?.dataset.state) === 'finished'", timeout=300_000)
    # The history follows without a reload: the same row now says finished.
    page.wait_for_function(row_js, arg=[run_id, "finished"], timeout=30_000)
    final = json.loads((run_dir / "final_eval.json").read_text())
    assert final["steps"] == 6 and final["resumed_from_step"] >= 1
    assert not page.locator("#train-resume").is_visible()  # a finished run has nothing to resume
