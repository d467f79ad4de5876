"""Browser: open the page, chat with the light tier, see the streamed answer."""

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_chat_with_light_tier(page, app_url):
    page.goto(app_url)
    page.wait_for_selector("#chat-input textarea")
    status = page.locator("#chat-status")
    status.get_by_text("light").wait_for()
    page.locator("#chat-tier input").click()
    page.get_by_role("option", name="light", exact=True).click()
    page.wait_for_function("document.querySelector('#chat-tier-info').innerText.includes('SmolLM2')")
    page.locator("#chat-input textarea").fill("make this better: write a haiku about rain")
    page.locator("#chat-send").click()
    stats = page.locator("#chat-stats")
    # While streaming the stats line counts tokens; at the end it shows the timing.
    page.wait_for_function("document.querySelector('#chat-stats').innerText.includes('tokens')", timeout=90_000)
    page.wait_for_function("document.querySelector('#chat-stats').innerText.includes('tok/s')", timeout=120_000)
    assert stats.inner_text().startswith("light: TTFT")
    bubbles = page.locator("#chat-bot .message")
    assert bubbles.count() >= 2
    answer = bubbles.last.inner_text()
    assert "tok/s" in answer and len(answer.split()) > 8
    assert "haiku about rain" in bubbles.first.inner_text()
    # Status now reports the tier as loaded.
    page.wait_for_function("document.querySelector('#chat-status').innerText.includes('ready')", timeout=15_000)


def test_empty_message_warns_and_unavailable_tier_explains(page, app_url):
    page.goto(app_url)
    page.wait_for_selector("#chat-input textarea")
    page.locator("#chat-send").click()
    page.get_by_text("Type a request first").wait_for()
    assert "ollama serve" in page.locator("#chat-status").inner_text()


def test_example_click_on_the_default_enhanced_tier_gives_an_improved_prompt(page, app_url):
    """A first-time visitor clicks an example and sees PET work, without typing."""
    page.goto(app_url)
    page.wait_for_selector("#chat-input textarea")
    assert "LoRA" in page.locator("#chat-tier-info").inner_text()  # the page opens on the enhanced tier
    page.get_by_text("System prompt and generation settings").click()
    page.locator("#chat-seed input").fill("3")  # a fixed seed: the same answer on every run
    page.locator(".pet-example").first.click()
    page.wait_for_function("document.querySelector('#chat-stats').innerText.includes('tok/s')", timeout=180_000)
    assert page.locator("#chat-stats").inner_text().startswith("enhanced: TTFT")
    answer = page.locator("#chat-bot .message").last.inner_text()
    assert "Blocks added:" in answer  # the shape PET was trained to give: a prompt, then its blocks
