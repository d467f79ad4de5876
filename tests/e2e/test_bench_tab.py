"""The Benchmark tab in the browser: Score my prompt answers as you type; a quick run shows its progress with
an ETA, its tables and chart, and lands in the past runs."""

from __future__ import annotations

import pytest

from tests.conftest import smollm_tiers

pytestmark = pytest.mark.e2e

# Records every progress text gradio shows while the run is going.
WATCH = """() => {
  window.__progress = [];
  new MutationObserver(() => {
    const t = document.querySelector('#tab-bench').innerText;
    if (t.includes('ETA')) window.__progress.push(t.slice(t.indexOf('ETA') - 60, t.indexOf('ETA') + 12));
  }).observe(document.querySelector('#tab-bench'), {subtree: true, childList: true, characterData: true});
}"""


@pytest.fixture
def bench_app(app_on, pet_home):
    return app_on(smollm_tiers("petbot"))


def test_score_box_and_a_quick_run(bench_app, page):
    home, url = bench_app
    page.goto(url)
    page.get_by_role("tab", name="Benchmark").click()

    page.locator("#bench-score-prompt textarea").fill("write a poem about autumn")
    total = page.locator("#bench-score-total")
    total.get_by_text("PET score:").wait_for()
    assert "8 / 100" in total.inner_text()  # WHAT 16, minus 8 for a 5-word prompt
    tips = page.locator("#bench-score-tips").inner_text()
    assert "WHO: open with a role" in tips and "too short to be specific" in tips
    page.locator("#bench-score-prompt textarea").fill(
        "You are a poet. Write a 12-line poem about autumn for children. Format: rhymed couplets. "
        "Avoid sad images. Example: 'Leaves fall down, red and brown.'")
    page.wait_for_function("() => !document.querySelector('#bench-score-total').innerText.includes('8 / 100')")
    assert "WHO (role) | 12 / 12" in page.locator("#bench-score-table").inner_text().replace("\t", " | ")

    page.locator("#bench-quick").get_by_role("checkbox").check()
    page.locator("#bench-limit input").fill("2")
    page.evaluate(WATCH)
    page.locator("#bench-run").click()
    table = page.locator("#bench-table")
    # While it runs the output shows the progress ("75% · petbot: answer 1/2 · ETA 29s"); then the table.
    page.wait_for_function("() => document.querySelector('#bench-table').innerText.includes('tok/s')",
                           timeout=300_000)
    text = table.inner_text()
    assert "tersebot" in text and "PET score" in text and "tok/s" in text
    assert "win rate" not in text  # quick: no judge
    comps = page.locator("#bench-comparisons").inner_text()
    assert "tersebot" in comps and "pet_score" in comps
    progress = page.evaluate("() => window.__progress")
    assert progress, "no progress with an ETA was shown"
    runs = page.locator("#bench-runs-table").inner_text()
    assert "(quick)" in runs and "tersebot" in runs
    page.locator("#bench-chart").locator(".js-plotly-plot").first.wait_for()
    page.locator("#bench-run-chart").locator(".js-plotly-plot").first.wait_for()
