"""Data tab in a real browser (issue 8):
- item 16: a file with some bad rows offers "import the N good rows"; JSON errors are whole sentences;
  a CSV with unusual column names is recognised, or its columns are chosen in the preview;
- item 17: a row is edited as a form (request, answer, domain, techniques) with real line breaks, Save is
  off while the row is invalid, and after saving the editor names the new version; tags are kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from pet.datastore import DatasetStore
from pet.store import Store
from tests.conftest import make_home, running_app

pytestmark = pytest.mark.e2e

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "data"
TAGGED = {"messages": [{"role": "user", "content": "need a packing list for a ski trip"},
                       {"role": "assistant", "content": "You are an experienced ski guide.\n\nTask: write a packing "
                                                        "list for a 5-day ski trip.\nFormat: a checklist."}],
          "domain": "planning", "techniques": ["role", "output_format"], "language": "en", "split": "heldout"}


@pytest.fixture(scope="module")
def data_app(tmp_path_factory):
    home = make_home(tmp_path_factory.mktemp("data-form-home"))
    ds = DatasetStore(Store(home / "pet.db"))
    ds.add([TAGGED], "one tagged example")  # version 2: the shipped examples + TAGGED as the last row
    with running_app(home) as url:
        yield home, url, ds


def _upload(page, path: Path) -> None:
    if page.locator("#data-upload button[aria-label='Clear']").count():
        page.locator("#data-upload button[aria-label='Clear']").click()
        page.wait_for_function("!document.querySelector('#data-upload-report').innerText.trim()")
    with page.expect_file_chooser() as chooser:
        page.locator("#data-upload button.upload-container").click()
    chooser.value.set_files(str(path))


def _open_data_tab(page, url, version: int) -> None:
    page.goto(url)
    page.get_by_role("tab", name="Data").click()
    page.locator("#data-info").get_by_text(f"version {version} ·").wait_for()


def test_upload_good_rows_json_sentences_and_csv_columns(data_app, page, tmp_path):
    home, url, ds = data_app
    start = ds.latest()
    _open_data_tab(page, url, start)
    report = page.locator("#data-upload-report")

    # One bad row no longer blocks the others.
    _upload(page, FIX / "bad.jsonl")
    report.get_by_text("the 1 good row(s) can be imported on their own").wait_for()
    # The JSON error is a whole sentence with its fix, not Python's fragment.
    assert ("row 7, json: bad JSON at line 7, column 51: a comma is missing between two items, or the line ends "
            "before its } or ].") in report.inner_text()
    assert page.locator("#data-import").is_disabled()
    good = page.locator("#data-import-good")
    good.get_by_text("Import the 1 good row(s), skip 6 bad").wait_for()
    good.click()
    page.locator("#data-status").get_by_text(f"Imported as version {start + 1}: imported 1 from bad.jsonl "
                                             "(skipped 6 bad row(s): 2, 3, 4, 5, 6, 7)").wait_for()
    assert ds.get(start + 1)[-1]["messages"][0]["content"] == "write a poem about the sea"

    # A CSV with everyday column names is recognised, and the preview shows which columns it read.
    named = tmp_path / "named.csv"
    named.write_text("Rough Request,Better Prompt\nwrite a limerick,You are a comic poet. Write a limerick.\n")
    _upload(page, named)
    report.get_by_text("ready to import: 1 example(s)").wait_for()
    assert page.locator("#data-request-column input").input_value() == "Rough Request"
    assert page.locator("#data-answer-column input").input_value() == "Better Prompt"

    # Columns it cannot recognise are chosen in the preview.
    odd = tmp_path / "odd.csv"
    odd.write_text("c1,c2\nplan a picnic,You are an event planner. Plan a picnic for 6.\n"
                   "fix my cv,You are a recruiter. Review this CV.\n")
    _upload(page, odd)
    report.get_by_text("no request column found").wait_for()
    assert page.locator("#data-import").is_disabled()
    for picker, column in (("#data-request-column", "c1"), ("#data-answer-column", "c2")):
        page.locator(f"{picker} input").click()
        page.locator(picker).get_by_role("option", name=column, exact=True).click()
    report.get_by_text("ready to import: 2 example(s)").wait_for()
    assert "plan a picnic" in page.locator("#data-upload-preview").inner_text()
    page.locator("#data-import").click()
    page.locator("#data-status").get_by_text(f"Imported as version {start + 2}: imported 2 from odd.csv").wait_for()
    assert [e["messages"][0]["content"] for e in ds.get(start + 2)[-2:]] == ["plan a picnic", "fix my cv"]


def test_a_row_is_edited_as_a_form(data_app, page):
    home, url, ds = data_app
    v = ds.latest()
    rows = ds.get(v)
    n = next(i for i, e in enumerate(rows, 1) if e["messages"] == TAGGED["messages"])  # the fixture's row
    _open_data_tab(page, url, v)
    page.fill("#data-row input", str(n))
    page.locator("#data-edit").click()
    page.locator("#data-editing").get_by_text(f"row {n} of version {v}").wait_for()
    req, ans = page.locator("#data-request textarea"), page.locator("#data-answer textarea")
    page.wait_for_function("document.querySelector('#data-answer textarea').value.length > 0")
    assert req.input_value() == "need a packing list for a ski trip"
    assert ans.input_value() == TAGGED["messages"][1]["content"]  # real line breaks, no \n escapes
    assert page.locator("#data-domain textarea, #data-domain input").first.input_value() == "planning"
    assert "language: en · split: heldout" in page.locator("#data-kept").inner_text()
    page.locator("#data-preview mark").first.wait_for()
    assert page.locator("#data-save").is_enabled()

    ans.fill("")
    page.locator("#data-check").get_by_text("answer: empty answer").wait_for()
    page.wait_for_function("document.querySelector('#data-save').disabled")  # no saving an invalid row
    ans.fill("You are an experienced ski guide.\nTask: write a packing list for a 5-day ski trip, by category.")
    page.wait_for_function("!document.querySelector('#data-save').disabled")
    page.wait_for_function("document.querySelector('#data-preview').innerText.includes('by category')")
    page.locator("#data-save").click()
    page.locator("#data-status").get_by_text(f"Saved as version {v + 1}: edited row {n}").wait_for()
    # The editor now names the version it is editing: the new one.
    page.locator("#data-editing").get_by_text(f"row {n} of version {v + 1}").wait_for()
    saved = ds.get(v + 1)[n - 1]
    assert saved["messages"][1]["content"].endswith("by category.") and "\n" in saved["messages"][1]["content"]
    assert (saved["language"], saved["split"], saved["domain"]) == ("en", "heldout", "planning")
