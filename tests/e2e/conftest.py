"""Fixtures the browser tests share (tests/conftest.py has the helpers behind them)."""

from __future__ import annotations

import pytest

from tests.conftest import home_with_tiers, start_app, stop_app


@pytest.fixture
def app_on(tmp_path):
    """app_on(tiers=None, **env) -> (home, url): the app on a fresh home under tmp_path, with those tiers
    (TOML text) as its tiers file; stopped when the test ends."""
    procs = []

    def start(tiers: str | None = None, **env: str):
        home, path = home_with_tiers(tmp_path, tiers)
        proc, url = start_app(home, extra_env={**env, **({"PET_TIERS": str(path)} if path else {})})
        procs.append(proc)
        return home, url

    yield start
    for proc in procs:
        stop_app(proc)
