"""pet.dataview: table pages at 10,000 rows, the row editor's checks, the escaped training preview."""

from __future__ import annotations

import json
import time

from pet import dataview as dv
from pet.dataset import Lengths
from pet.templates import BUILTIN


def ex(i: int, **tags) -> dict:
    return {"messages": [{"role": "user", "content": f"request {i} about {'sql' if i % 10 == 0 else 'poems'}"},
                         {"role": "assistant", "content": f"You are an expert. Improved prompt {i}."}], **tags}


def test_paging_search_and_tag_filter_at_10000_rows():
    """How quick it is, bench/data_paging.py measures; here, that it is right."""
    rows = [ex(i, domain="technical" if i % 10 == 0 else "creative", techniques=["role"]) for i in range(10_000)]
    idx = dv.Index(7, rows)
    page = dv.table_page(idx, "SQL", "domain: technical", 3, Lengths())
    last = dv.table_page(idx, "", dv.ALL_TAGS, 10_000)
    assert (page.matched, page.pages, page.page, len(page.rows)) == (1000, 40, 3, 25)
    assert page.rows[0][:4] == [501, "technical", "role", "request 500 about sql"]
    assert page.info(7) == "version 7 · 10000 examples · 1000 matching · page 3 of 40"
    assert (last.page, last.pages, last.rows[-1][0]) == (400, 400, 10_000)  # a page past the end shows the last
    assert idx.tag_choices() == [dv.ALL_TAGS, "domain: creative", "domain: technical", "technique: role"]


def test_row_form_round_trip_keeps_tags_and_real_newlines():
    """Issue 8, item 17: the row is a form (request, answer, domain, techniques), not JSON with escapes."""
    e = {"messages": [{"role": "user", "content": "plan a trip"},
                      {"role": "assistant", "content": "You are a travel agent.\n\nTask: plan 3 days."}],
         "domain": "planning", "techniques": ["role", "few_shot"], "language": "en", "split": "heldout"}
    system, request, answer, domain, tech, kept = dv.form_fields(e)
    assert (system, request, answer, domain, tech) == ("", "plan a trip", "You are a travel agent.\n\nTask: plan 3 days.",
                                                        "planning", "role, few_shot")
    assert "\\n" not in answer  # real line breaks, as typed
    assert "language: en · split: heldout" in kept
    assert dv.from_form(e, system, request, answer, domain, tech) == (e, [])
    edited, _ = dv.from_form(e, "Be brief.", request, answer + "\nDone.", domain, "role")
    assert edited["messages"][0] == {"role": "system", "content": "Be brief."}
    assert edited["messages"][-1]["content"].endswith("\nDone.") and edited["techniques"] == ["role"]
    assert (edited["language"], edited["split"]) == ("en", "heldout")  # tags survive the edit


def test_row_form_names_its_fields_in_problems():
    got, problems = dv.from_form(None, "", "write a poem", "   ", "", "")
    assert got is None and [str(p) for p in problems] == [
        "file, answer: empty answer: write the text or delete the message"]
    assert "answer: empty answer" in dv.check_html(None, problems, None)
    assert dv.from_form(None, "", "", "x", "", "")[1][0].field == "request"


def test_row_form_keeps_the_earlier_turns_of_a_multi_turn_example():
    e = {"messages": [{"role": "user", "content": "fix my prompt"}, {"role": "assistant", "content": "Which one?"},
                      {"role": "user", "content": "write a poem"}, {"role": "assistant", "content": "You are a poet."}]}
    _, request, answer, _, _, kept = dv.form_fields(e)
    assert (request, answer) == ("write a poem", "You are a poet.")
    assert "Earlier turns, kept as they are (2)" in kept and "fix my prompt" in kept
    edited, problems = dv.from_form(e, "", request, "You are a poet. Write 8 lines.", "", "")
    assert problems == [] and edited["messages"][:3] == e["messages"][:3]
    assert edited["messages"][3]["content"] == "You are a poet. Write 8 lines."


def test_check_reports_tokens_against_the_cutoff():
    short = ex(1)
    assert dv.check_html(short, [], Lengths(), cutoff=512).endswith("ok: 15 tokens (estimated) (cutoff 512)</div>")
    long = {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y" * 4000}]}
    assert "over the training cutoff of 512" in dv.check_html(long, [], Lengths(), cutoff=512)


def test_preview_escapes_everything_and_marks_the_trained_part():
    msgs = [{"role": "user", "content": "<script>alert(1)</script> fix"},
            {"role": "assistant", "content": "You are <b>bold</b> & brief."}]
    out = dv.preview_html(BUILTIN["gemma3"], msgs)
    assert "<script>" not in out and "<b>" not in out
    assert ("&lt;bos&gt;&lt;start_of_turn&gt;user\n&lt;script&gt;alert(1)&lt;/script&gt; fix&lt;end_of_turn&gt;\n"
            "&lt;start_of_turn&gt;model\n<mark>You are &lt;b&gt;bold&lt;/b&gt; &amp; brief.&lt;end_of_turn&gt;\n"
            "</mark>") in out
    assert out.count("<mark>") == 1


def test_put_row_edits_a_row_or_appends_a_new_one():
    rows = [ex(0), ex(1)]
    assert dv.put_row(rows, 1, ex(9)) == (1, "edited row 2") and rows[1] == ex(9) and len(rows) == 2
    assert dv.put_row(rows, -1, ex(7)) == (2, "added row 3") and rows[2] == ex(7)
    assert dv.put_row(rows, 99, ex(8)) == (3, "added row 4") and len(rows) == 4  # a stale row number appends


def test_import_note_names_the_file_and_the_skipped_rows():
    from pet.dataset import ParseResult, Problem

    good = ParseResult("messages", examples=[ex(0), ex(1)])
    assert dv.import_note("C:\\Users\\me\\rows.jsonl", good) == "imported 2 from rows.jsonl"
    bad = ParseResult("csv", examples=[ex(0)], errors=[Problem(3, "answer", "empty"), Problem(5, "request", "x"),
                                                       Problem(3, "request", "y")])
    assert dv.import_note("/tmp/a/b.csv", bad) == "imported 1 from b.csv (skipped 2 bad row(s): 3, 5)"
