"""The PET score on hand-written prompts: one test per block and per penalty, with exact expectations,
and its calibration on the shipped examples."""

from __future__ import annotations

import pytest

from pet import score
from pet.score import WEIGHTS, is_answer_not_rewrite, keeps_subject, score_prompt

# 26 words, one task sentence, no other block and no vague word: scores exactly WHAT's 16 points.
BASE = ("Write a summary of the quarterly sales figures for the northern region, covering revenue, units sold "
        "and the largest customer accounts by total spend this year.")

ADD = {
    "who": "You are a financial analyst who reports to the board.",
    "use": "Context: the figures come from our CRM export for July to September.",
    "how": "Format: a table with one row per month, then under 200 words of commentary.",
    "dont": "Do not speculate about causes the data does not show.",
    "think": "Before writing, check that the monthly totals add up to the quarter.",
    "show": "Example row: July | 1,204 units | $88,000.",
    "audience": "Tone: plain and direct.",
    "success": "Success means a board member can read it in two minutes and know where revenue came from.",
}


def test_base_prompt_earns_only_the_task():
    s = score_prompt(BASE)
    assert s.credit == {k: (1.0 if k == "what" else 0.0) for k in WEIGHTS}
    assert s.penalties == {"answering": 0.0, "drift": 0.0, "vague": 0.0, "ramble": 0.0}
    assert s.total == 16.0


@pytest.mark.parametrize("block", list(ADD))
def test_each_block_adds_exactly_its_points(block):
    base = score_prompt(BASE)
    text = f"{ADD[block]}\n\n{BASE}" if block == "who" else f"{BASE}\n{ADD[block]}"
    s = score_prompt(text)
    changed = {k for k in WEIGHTS if s.credit[k] != base.credit[k]}
    assert changed == {block}
    assert s.credit[block] == 1.0
    assert s.total - base.total == WEIGHTS[block]
    assert s.why[block]  # the breakdown says which words earned it
    assert not any(t.startswith(score.SUGGEST[block][:12]) for t in s.suggestions)
    assert any(t.startswith(score.SUGGEST[block][:12]) for t in base.suggestions) or block == "what"


def test_what_needs_a_task_sentence():
    no_task = ("You are a financial analyst. The quarterly sales figures for the northern region, with revenue, "
               "units sold and the largest customer accounts by total spend this year.")
    s = score_prompt(no_task)
    assert s.credit["what"] == 0.0
    assert any(t.startswith("WHAT:") for t in s.suggestions)
    assert score_prompt(no_task + " Summarise them for the board in one page.").credit["what"] == 1.0
    assert score_prompt(no_task + " Summarise them.").credit["what"] == 0.5  # a task, but no deliverable


def test_half_credit_for_weak_signals():
    assert score_prompt(BASE + " Mention products, e.g. boots and tents.").credit["show"] == 0.5
    assert score_prompt(BASE + " Keep it friendly.").credit["audience"] == 0.5
    assert score_prompt(BASE + " Write it without tables.").credit["dont"] == 0.5
    assert score_prompt(BASE + " Use bullets.").credit["how"] == 0.5  # one format signal of the two


def test_full_prompt_scores_100():
    text = "\n".join([ADD["who"], BASE] + [ADD[k] for k in ADD if k != "who"])
    s = score_prompt(text, request="sales summary for the northern region")
    assert s.total == 100.0 and not s.suggestions


def test_blocks_added_line_is_not_scored():
    text = BASE + "\n\nBlocks added: WHO as a role, HOW as a table, DON'T for speculation, SHOW with an example."
    assert score_prompt(text).as_dict() == score_prompt(BASE).as_dict()
    assert score.has_blocks_line(text) and not score.has_blocks_line(BASE)


# -- penalties ------------------------------------------------------------------------------------------

def test_penalty_answering_instead_of_improving():
    request = "write a poem about autumn"
    poem = ("Sure! Here's a poem about autumn:\n\nGolden leaves drift slowly down,\nA quiet hush on every town,\n"
            "The maples blaze in red and gold,\nAs evenings turn from warm to cold.")
    assert is_answer_not_rewrite(request, poem)
    s = score_prompt(poem, request)
    assert s.penalties["answering"] == 40.0 and s.total == 0.0
    assert s.suggestions[0].startswith("This reads as an answer")
    # The same opener followed by a prompt is a rewrite, not an answer.
    rewrite = ("Here is an improved prompt:\n\nYou are a poet who writes short seasonal verse. Write a 12-line poem "
               "about autumn in rhymed couplets. Avoid cliches such as falling leaves.")
    assert not is_answer_not_rewrite(request, rewrite)
    # A letter (greeting and sign-off, no instructions) and an essay with no instruction are answers too.
    assert is_answer_not_rewrite("email my landlord about the heating",
                                 "Dear Mr Smith,\n\nThe heating has been broken for a week.\n\nBest regards,\nAnna")
    essay = ("Autumn is the season of harvest.\nFarmers gather crops before the frost.\n"
             "Days shorten and the air cools, and many animals prepare for winter.")
    assert is_answer_not_rewrite(None, essay)
    # A rough request asks for something: it is a weak prompt, not an answer.
    assert not is_answer_not_rewrite(None, "can you help me write a poem about autumn for my kids class please")


def test_penalty_drift_off_the_request():
    request = "cover letter for a nurse job at a children's hospital"
    on = ("You are a careers coach. Write a cover letter for my application to a nurse job at a children's "
          "hospital. Format: under 300 words.")
    off = ("You are a careers coach. Write a marketing plan for my bakery's spring launch, with a budget "
           "table. Format: under 300 words.")
    assert keeps_subject(request, on) == 1.0
    assert keeps_subject(request, off) == 0.0
    s_on, s_off = score_prompt(on, request), score_prompt(off, request)
    assert s_on.penalties["drift"] == 0.0
    assert s_off.penalties["drift"] == 25.0
    assert "nurse" in s_off.details["drift_why"]
    assert any("Keep the request's subject" in t for t in s_off.suggestions)
    # Without the request there is nothing to drift from.
    assert score_prompt(off).penalties["drift"] == 0.0
    # Stems match across forms: photos/photo, renaming/rename.
    assert keeps_subject("rename my photos", "A script that renames each photo by date.") == 1.0
    assert keeps_subject("improve this prompt: please make it better", "anything") == 1.0  # no content words


def test_penalty_vague():
    vague = BASE + " Make it nice and interesting, add some good stuff and various things, etc."
    s = score_prompt(vague)
    assert s.penalties["vague"] == 10.0  # capped at 10 for vague words
    assert "stuff" in s.details["vague_why"]
    assert any(t.startswith("Replace vague words") for t in s.suggestions)
    short = score_prompt("write a poem")
    assert short.penalties["vague"] == pytest.approx(10 * (25 - 3) / 25, abs=0.01)
    assert any("too short" in t for t in short.suggestions)
    assert score_prompt(BASE).penalties["vague"] == 0.0


def test_penalty_ramble():
    looped = BASE + "\n" + "\n".join(["Make sure the summary covers all of the regions."] * 6)
    s = score_prompt(looped)
    assert s.penalties["ramble"] > 5 and "repeated" in s.details["ramble_why"]
    over = score_prompt(BASE + " " + " ".join(f"item{i}" for i in range(524)))  # 550 words: 100 over
    assert over.penalties["ramble"] == 5.0 and "550 words (over 450)" in over.details["ramble_why"]
    assert score_prompt(BASE + " " + " ".join(f"item{i}" for i in range(900))).penalties["ramble"] == 15.0


def test_deterministic_and_bounded():
    texts = ["", "x", BASE, "Sure! " * 300]
    for t in texts:
        a, b = score_prompt(t, "a request"), score_prompt(t, "a request")
        assert a.as_dict() == b.as_dict()
        assert 0.0 <= a.total <= 100.0


def test_auc():
    assert score.auc([3, 4], [1, 2]) == 1.0
    assert score.auc([1], [1]) == 0.5
    assert score.auc([1, 2], [2, 3]) == pytest.approx(0.125)


def test_calibration_on_the_shipped_examples():
    from pet.dataset import SHIPPED, read_jsonl

    res = score.calibrate(read_jsonl(SHIPPED))
    assert res["examples"] >= 200
    assert res["auc"] >= 0.95
    assert res["median_reference"] - res["median_request"] >= 40
    assert res["references_flagged_answering"] == 0
