"""pet.dataview: table pages at 10,000 rows, the row editor's checks, the escaped training preview."""

from __future__ import annotations

import json

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


def test_editor_round_trip_and_problems():
    e = ex(1, domain="creative", techniques=["role", "few_shot"])
    text, dom, tech = dv.editor_fields(e)
    assert dv.from_editor(text, dom, tech) == (e, [])
    bad = json.loads(text)
    bad[1]["role"] = "robot"
    got, problems = dv.from_editor(json.dumps(bad), "", "")
    assert got is None and [str(p) for p in problems] == [
        "file, messages[1].role: unknown role 'robot': use system, user or assistant"]
    got, problems = dv.from_editor('[{"role": "user"', "", "")
    assert [str(p) for p in problems] == ["file, messages: bad JSON at line 1, column 17: Expecting ',' delimiter"]
    assert "unknown role" in dv.check_html(None, dv.from_editor(json.dumps(bad), "", "")[1], None)


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
