"""Every download in the app works with PET_HOME outside the temp folder and outside the working directory
(issue 8, item 1): Gradio serves only files it created, the temp dir, the cwd and allowed_paths, and every
other test keeps PET_HOME under /tmp, where a missing allowed_paths goes unnoticed."""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

from pet import arena
from pet.datastore import DatasetStore
from pet.store import Store
from tests.conftest import REPO, make_home, running_app

pytestmark = pytest.mark.e2e


def outside_root() -> Path:
    """A folder in neither the system temp dir nor the repository (the app's working directory)."""
    for base in (Path.home() / ".cache" / "pet-studio-tests" / "homes", Path("/var/tmp/pet-studio-tests")):
        b = base.resolve() if base.exists() else base
        if not b.is_relative_to(Path(tempfile.gettempdir()).resolve()) and not b.is_relative_to(REPO):
            return b / uuid.uuid4().hex[:12]
    pytest.fail("no folder outside the temp dir and the repository to put PET_HOME in")


@pytest.fixture
def outside_app():
    root = outside_root()
    home = make_home(root)
    store = Store(home / "pet.db")
    arena.record_vote(store, {"id": "dl1", "tier_a": "light", "tier_b": "base", "prompt": "write a poem",
                              "answer_a": "You are a poet.", "answer_b": "Roses are red."}, "a", session="s")
    with running_app(home) as url:
        yield home, url
    shutil.rmtree(root, ignore_errors=True)


def _download(page, selector: str) -> bytes:
    link = page.locator(f"{selector} a[download]")
    link.wait_for(timeout=30_000)
    resp = page.request.get(link.get_attribute("href"))
    assert resp.ok, resp.status
    return resp.body()


def test_every_download_works_with_pet_home_outside_the_temp_folder(outside_app, page):
    home, url = outside_app
    assert not home.resolve().is_relative_to(Path(tempfile.gettempdir()).resolve())
    page.goto(url)

    # Data tab: export the dataset
    page.get_by_role("tab", name="Data").click()
    page.locator("#data-info").get_by_text("version 1").wait_for()
    page.get_by_text("Export", exact=True).first.click()
    page.locator("#data-export").click()
    page.locator("#data-status").get_by_text("Exported").wait_for()
    body = _download(page, "#data-export-file")
    rows = [json.loads(line) for line in body.decode().splitlines()]
    assert rows == DatasetStore(Store(home / "pet.db")).get(1)
    assert (home / "exports" / "pet_examples_v1.jsonl").is_file()  # written under PET_HOME, not /tmp

    # Arena tab: export the votes
    page.get_by_role("tab", name="Arena").click()
    page.get_by_text("Export votes").click()
    page.locator("#arena-export").click()
    body = _download(page, "#arena-export-file")
    [rec] = [json.loads(line) for line in body.decode().splitlines()]
    assert (rec["tier_a"], rec["tier_b"], rec["winner"]) == ("light", "base", "model_a")
    assert len(list((home / "exports").glob("arena_battles_*.jsonl"))) == 1

    assert page.locator(".toast-body.error, .toast-wrap .error").count() == 0
    log = next(home.glob("app-*.log")).read_text()
    assert "InvalidPathError" not in log and "Cannot move" not in log
