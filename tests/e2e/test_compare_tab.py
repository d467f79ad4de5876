"""Browser: Compare streams two tiers side by side (issue 13, item 6), and a screenshot of every tab.

Screenshots go to $PET_SCREENSHOTS when set (docs/screenshots holds the ones the README shows),
else to the test's temporary folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TABS = ("chat", "data", "train", "compare", "arena")


@pytest.fixture
def shots(tmp_path) -> Path:
    folder = Path(os.environ.get("PET_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_compare_streams_two_tiers_side_by_side(page, app_url, shots):
    page.goto(app_url)
    page.get_by_role("tab", name="Compare").click()
    page.wait_for_selector("#compare-prompt textarea")
    boxes = page.locator("#compare-tiers")
    boxes.get_by_label("light", exact=True).wait_for()
    for name in ("light", "base"):
        boxes.get_by_label(name, exact=True).check()
    for name in ("enhanced", "power"):
        boxes.get_by_label(name, exact=True).uncheck()
    page.locator("#compare-max-new input[type=number]").fill("24")
    page.locator("#compare-max-new input[type=number]").press("Enter")
    page.locator("#compare-prompt textarea").fill("write a poem about autumn")
    page.locator("#compare-run").click()
    # each chosen tier streams into its own column (slots 0, 1, ... in the tiers' order), titled with its name
    for k in (0, 1):
        page.wait_for_function(f"(document.querySelector('#compare-stats-{k}')?.innerText || '').includes('tok/s')",
                               timeout=180_000)
    assert [page.locator(f"#compare-title-{k}").inner_text().strip() for k in (0, 1)] == ["light", "base"]
    page.get_by_text("Saved as").wait_for()
    light, base = (page.locator(f"#compare-col-{k}").bounding_box() for k in (0, 1))
    assert light["x"] + light["width"] <= base["x"] + 1 and abs(light["y"] - base["y"]) < 5  # side by side
    assert not page.locator("#compare-col-2").is_visible()
    for k in (0, 1):
        assert len(page.locator(f"#compare-answer-{k}").inner_text().split()) >= 3
    page.screenshot(path=str(shots / "compare.png"), full_page=True)


def test_a_screenshot_of_every_tab(page, app_url, shots):
    page.goto(app_url)
    page.wait_for_selector("#chat-input textarea")
    for tab in TABS:
        page.get_by_role("tab", name=tab.capitalize()).click()
        page.locator(f"#tab-{tab}").wait_for()
        page.wait_for_timeout(500)  # let plots and tables draw
        path = shots / f"tab-{tab}.png"
        page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 10_000
