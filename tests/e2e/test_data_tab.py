"""Data tab in a real browser: a bad upload changes nothing, a good one imports, a row is edited
and saved, an earlier version is restored, and HTML inside an example never runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pet.dataset import parse_bytes
from tests.conftest import make_home, running_app

pytestmark = pytest.mark.e2e

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "data"


@pytest.fixture(scope="module")
def data_app(tmp_path_factory):
    home = make_home(tmp_path_factory.mktemp("data-tab-home"))
    with running_app(home) as url:
        yield home, url


def _store(home):
    from pet.datastore import DatasetStore
    from pet.store import Store

    return DatasetStore(Store(home / "pet.db"))


def _upload(page, path: Path) -> None:
    # Gradio's file input sits outside the component; go through the browser's file chooser.
    with page.expect_file_chooser() as chooser:
        page.locator("#data-upload button.upload-container").click()
    chooser.value.set_files(str(path))


def _table_shows(page, text: str) -> None:
    try:
        page.wait_for_function("t => document.querySelector('#data-table').innerText.replace(/\\s+/g, ' ')"
                               ".includes(t)", arg=text, timeout=15_000)
    except Exception:
        raise AssertionError(f"table lacks {text!r}: {page.locator('#data-table').inner_text()[:600]!r}") from None


def test_upload_edit_restore(data_app, page):
    from pet.dataset import SHIPPED, read_jsonl

    home, url = data_app
    shipped = len(read_jsonl(SHIPPED)) if SHIPPED.exists() else 0
    page.goto(url)
    page.get_by_role("tab", name="Data").click()
    info = page.locator("#data-info")
    info.get_by_text(f"version 1 · {shipped} examples").wait_for()
    ds = _store(home)
    assert [v["id"] for v in ds.versions()] == [1]

    # 1. a bad file: every problem by row, Import stays disabled, nothing is written
    _upload(page, FIX / "bad.jsonl")
    report = page.locator("#data-upload-report")
    report.get_by_text("cannot import the whole file: 6 problem(s) in 6 row(s)").wait_for()
    text = report.inner_text()
    for needle in ("row 2, messages[1].content: empty answer", "row 3, messages[1].role: unknown role 'bot'",
                   "row 4, messages[2].role: expected 'user'", "row 5, messages: must be a list",
                   "row 6, messages[0].content: content must be text", "row 7, json: bad JSON at line 7"):
        assert needle in text
    assert page.locator("#data-import").is_disabled()
    assert [v["id"] for v in ds.versions()] == [1]

    # 2. a good file (one example carries HTML and a script): preview, then an explicit Import
    page.locator("#data-upload button[aria-label='Clear']").click()
    _upload(page, FIX / "good_upload.jsonl")
    report.get_by_text("ready to import: 3 example(s)").wait_for()
    assert [v["id"] for v in ds.versions()] == [1]  # previewing writes nothing
    assert '<img src=x onerror="window.__pwned=1"> fix' in page.locator("#data-upload-preview").inner_text()
    assert page.locator("#data-upload-preview img, #data-upload-report img").count() == 0
    page.locator("#data-import").click()
    page.locator("#data-status").get_by_text("Imported as version 2").wait_for()
    info.get_by_text(f"version 2 · {shipped + 3} examples").wait_for()
    assert len(ds.get(2)) == shipped + 3

    # the script-bearing row is searchable and shown as text, never run
    page.fill("#data-search textarea", "onerror")
    page.press("#data-search textarea", "Enter")
    info.get_by_text("1 matching").wait_for()
    _table_shows(page, '<img src=x onerror="window.__pwned=1"> fix my prompt')
    page.fill("#data-row input", str(shipped + 3))
    page.locator("#data-edit").click()
    page.locator("#data-preview mark").first.wait_for()
    assert "<script>window.__pwned=2</script>" in page.locator("#data-preview").inner_text()
    assert page.locator("#data-preview script, #data-preview img, #data-table img, #data-table script").count() == 0
    assert page.evaluate("window.__pwned") is None

    # 3. select row 1 in the table, edit it with validation as you type, then save as a new version
    page.fill("#data-search textarea", "")
    page.press("#data-search textarea", "Enter")
    info.get_by_text(f"{shipped + 3} matching").wait_for()
    page.locator('#data-table tr[data-row="1"]').click()
    page.locator("#data-editing").get_by_text("row 1 of version 2").wait_for()
    req = page.locator("#data-request textarea")
    ans = page.locator("#data-answer textarea")
    page.wait_for_function("document.querySelector('#data-answer textarea').value.length > 0")
    old_request, old_answer = req.input_value(), ans.input_value()
    ui = 0
    ans.fill("   ")
    page.locator("#data-check").get_by_text("answer: empty answer").wait_for()
    page.wait_for_function("document.querySelector('#data-save').disabled")
    ans.fill(old_answer)
    req.fill("help me plan a team offsite for 12 people")
    page.locator("#data-check").get_by_text(re.compile(r"ok: \d+ tokens")).wait_for()
    # The check line said "ok" for the restored answer already: wait for the preview of the new request.
    page.wait_for_function("document.querySelector('#data-preview').innerText.includes('help me plan a team offsite')")
    preview = page.locator("#data-preview").inner_text()
    assert "help me plan a team offsite" in preview
    assert "You are PET, a prompt engineer." in preview  # the tier's system prompt, as the trainer adds it
    page.locator("#data-save").click()
    page.locator("#data-status").get_by_text("Saved as version 3: edited row 1").wait_for()
    assert ds.get(3)[0]["messages"][ui]["content"] == "help me plan a team offsite for 12 people"
    assert ds.get(3)[1:] == ds.get(2)[1:]

    # 4. restore version 2: a new version equal to it; the table shows the old row again
    page.fill("#data-search textarea", "")
    page.press("#data-search textarea", "Enter")
    info.get_by_text(f"version 3 · {shipped + 3} examples · {shipped + 3} matching").wait_for()
    page.fill("#data-version input", "2")
    page.locator("#data-restore").click()
    page.locator("#data-status").get_by_text("Restored version 2 as version 4").wait_for()
    info.get_by_text(f"version 4 · {shipped + 3} examples").wait_for()
    assert ds.get(4) == ds.get(2)
    _table_shows(page, " ".join(old_request.split())[:40])
    assert [v["id"] for v in ds.versions()] == [4, 3, 2, 1]

    # a name with a '/' is refused with its fix (names end up in file names) and nothing changes
    page.fill("#data-version-name textarea", "<b>before edit</b>")
    page.locator("#data-name").click()
    page.get_by_text("no '/', '\\', '..' or leading '.'").first.wait_for()
    assert ds.versions()[2]["name"] is None
    # a version's name is shown as typed, never as markup
    page.fill("#data-version-name textarea", "<b>before edit")
    page.locator("#data-name").click()
    page.locator("#data-versions").get_by_text("<b>before edit").wait_for()
    assert page.locator("#data-versions b").count() == 0
    assert ds.versions()[2]["name"] == "<b>before edit"

    # 5. charts and export in every format
    page.locator("#data-chart-tokens .js-plotly-plot").wait_for()
    page.locator("#data-chart-tags .js-plotly-plot").wait_for()
    page.get_by_text("Export", exact=True).first.click()
    for fmt, ext in (("csv", "csv"), ("sharegpt", "json")):
        page.locator("#data-export-format input").click()
        page.get_by_role("option", name=fmt, exact=True).click()
        page.locator("#data-export").click()
        page.locator("#data-status").get_by_text(f"Exported {shipped + 3} examples of version 4 as {fmt}").wait_for()
        link = page.locator(f'#data-export-file a[download="pet_examples_v4.{ext}"]')
        link.wait_for()
        body = page.request.get(link.get_attribute("href")).body()
        assert parse_bytes(body, f"x.{ext}").examples == ds.get(4)


def test_two_tabs_never_overwrite_each_other(data_app, browser):
    home, url = data_app
    tabs = []
    for _ in range(2):
        pg = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        pg.set_default_timeout(30_000)
        pg.goto(url)
        pg.get_by_role("tab", name="Data").click()
        pg.locator("#data-info").get_by_text("version").wait_for()
        tabs.append(pg)
    latest = _store(home).latest()
    for pg in tabs:
        pg.locator("#data-info").get_by_text(f"version {latest} ·").wait_for()
        pg.locator("#data-new").click()
        pg.locator("#data-editing").get_by_text("a new row").wait_for()
        pg.fill("#data-request textarea", "help me write a polite reminder email")
        pg.fill("#data-answer textarea", "You are an assistant who writes short, polite reminder emails.")
        pg.locator("#data-check").get_by_text("ok:").wait_for()
    tabs[0].locator("#data-save").click()
    tabs[0].locator("#data-status").get_by_text(f"Saved as version {latest + 1}").wait_for()
    tabs[1].locator("#data-save").click()
    tabs[1].get_by_text(f"you edited version {latest}, but version {latest + 1}").first.wait_for()
    ds = _store(home)
    assert ds.latest() == latest + 1
    n = len(ds.get(latest + 1))
    assert ds.get(latest + 1)[-1]["messages"][0]["content"] == "help me write a polite reminder email"

    # the saved tab deletes that new row again: one more version, the row gone, the rest unchanged
    tabs[0].fill("#data-row input", str(n))
    tabs[0].locator("#data-edit").click()
    tabs[0].locator("#data-editing").get_by_text(f"row {n} of version {latest + 1}").wait_for()
    tabs[0].locator("#data-delete").click()
    tabs[0].locator("#data-status").get_by_text(f"Saved as version {latest + 2}: deleted row {n}").wait_for()
    assert ds.get(latest + 2) == ds.get(latest)
    for pg in tabs:
        pg.context.close()
