"""A Space without a login is a read-only demo (issue 8, item 3): it says so, and a write through the UI
is refused with the reason and the fix, changing nothing."""

from __future__ import annotations

import pytest

from pet.datastore import DatasetStore
from pet.store import Store

pytestmark = pytest.mark.e2e


@pytest.fixture
def space_app(app_on):
    return app_on(SPACE_ID="someone/pet-studio", PET_AUTH="", PET_ALLOW_WRITES="")


def test_a_public_space_refuses_writes(space_app, page):
    home, url = space_app
    page.goto(url)
    page.locator("#pet-read-only").get_by_text("Read-only demo").wait_for()
    page.get_by_role("tab", name="Data").click()
    page.locator("#data-info").get_by_text("version 1").wait_for()
    page.locator('#data-table tr[data-row="1"]').click()
    page.locator("#data-editing").get_by_text("row 1 of version 1").wait_for()
    page.locator("#data-delete").click()
    page.get_by_text("this Space is a read-only demo").first.wait_for()
    assert "PET_ALLOW_WRITES=1" in page.locator(".toast-body").first.inner_text()
    assert [v["id"] for v in DatasetStore(Store(home / "pet.db")).versions()] == [1]
