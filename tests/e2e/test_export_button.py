"""The Train tab's Export to Ollama, in a real browser, on a tiny Gemma 3 tier with a LoRA."""

import json

import pytest

from tests.conftest import make_home, running_app
from tests.test_export_ollama import make_tiny_gemma3

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def export_app(tmp_path_factory, engine):
    root = tmp_path_factory.mktemp("export-tab")
    _, _, tiers = make_tiny_gemma3(root, engine)
    home = make_home(root / "home")
    with running_app(home, tiers) as url:
        yield home, url


def test_export_a_tier_from_the_train_tab(export_app, page):
    home, url = export_app
    page.goto(url)
    page.get_by_role("tab", name="Train").click()
    page.get_by_text("Export a tier to Ollama").click()
    page.locator("#train-export-tier-button").click()
    result = page.locator("#train-export-tier-result")
    result.get_by_text("Exported").wait_for(timeout=180_000)
    text = result.inner_text()
    assert "pet-tuned" in text and "identical tokens in all three renderings" in text
    assert "ollama create pet-tuned -f Modelfile" in text
    folder = home / "exports" / "pet-tuned"
    rec = json.loads((folder / "pet_export.json").read_text())
    assert rec["parity"]["ok"] and (folder / "Modelfile").exists() and (folder / "model.safetensors").exists()
