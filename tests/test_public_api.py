"""The public API is chosen on purpose (issue 8, item 3): chat and compare (and score, once its tab exists);
every other event is private. On a Space without a login, writes refuse with a clear message."""

from __future__ import annotations

import json
import urllib.request

import pytest

from pet.config import ReadOnly, Settings


def test_only_the_chosen_endpoints_are_public(app_url):
    with urllib.request.urlopen(app_url + "gradio_api/info", timeout=10) as r:
        info = json.loads(r.read())
    assert set(info["named_endpoints"]) == {"/chat", "/compare", "/score"}
    assert info["unnamed_endpoints"] == {}
    from gradio_client import Client

    client = Client(app_url, verbose=False)
    for private in ("/save_row", "/delete_row", "/do_import", "/do_restore", "/arena_leaderboard"):
        with pytest.raises(Exception):
            client.predict(api_name=private)


def test_every_event_outside_the_public_list_is_private(engine):
    import pages

    demo = pages.build_app(engine)
    public = sorted(fn.api_name for fn in demo.fns.values() if fn.api_visibility != "private")
    assert public == ["chat", "compare", "score"]
    assert set(pages.PUBLIC_API) == {"chat", "compare", "score"}


@pytest.mark.parametrize("space,auth,opt_in,read_only", [
    (True, None, False, True),             # a public Space: a read-only demo
    (True, ("ann", "pw"), False, False),   # a Space with a login
    (True, None, True, False),             # the owner opted in
    (False, None, False, False),           # a local app
])
def test_read_only_only_on_a_space_without_login(tmp_path, space, auth, opt_in, read_only):
    s = Settings(home=tmp_path, space=space, auth=auth, allow_writes=opt_in)
    assert s.read_only is read_only
    if read_only:
        with pytest.raises(ReadOnly, match="cannot save a row: this Space is a read-only demo.*PET_ALLOW_WRITES=1"):
            s.check_writable("save a row")
    else:
        s.check_writable("save a row")


def test_space_settings_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SPACE_ID", "someone/pet-studio")
    monkeypatch.delenv("PET_AUTH", raising=False)
    monkeypatch.delenv("PET_ALLOW_WRITES", raising=False)
    assert Settings.from_env(home=tmp_path).read_only
    monkeypatch.setenv("PET_ALLOW_WRITES", "1")
    assert not Settings.from_env(home=tmp_path).read_only
    monkeypatch.setenv("PET_ALLOW_WRITES", "maybe")
    with pytest.raises(Exception, match="PET_ALLOW_WRITES: must be 1 or 0"):
        Settings.from_env(home=tmp_path)
