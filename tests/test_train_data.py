"""`python -m pet train` trains on the curated dataset (issue 8, item 5): by default the latest version the
Data tab or `pet data import` saved; `--version N` and `--data FILE` choose."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pet.datastore import DatasetStore
from pet.store import Store
from tests.test_trainer import REPO, make_examples, make_tiny_model


@pytest.fixture(scope="module")
def home_with_versions(tmp_path_factory):
    root = tmp_path_factory.mktemp("train-data")
    model = make_tiny_model(root / "tiny")
    home = root / "home"
    ds = DatasetStore(Store(home / "pet.db"))
    v2 = ds.add(make_examples(40), "forty tiny examples")  # version 1 is the shipped seed
    assert v2 == 2
    return home, model, ds


def _train(home, *args, timeout=300):
    env = dict(os.environ, PET_HOME=str(home))
    return subprocess.run([sys.executable, "-m", "pet", "train", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_default_is_the_latest_saved_version(home_with_versions):
    home, model, ds = home_with_versions
    r = _train(home, "--base", str(model), "--max-steps", "1", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"training on dataset version 2 ({len(ds.get(2))} examples)" in r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    run_dir = summary["run_dir"]
    assert run_dir.startswith(str(home / "runs"))
    frozen = [json.loads(x) for x in open(os.path.join(run_dir, "examples.jsonl"), encoding="utf-8")]
    assert frozen == ds.get(2)
    config = json.load(open(os.path.join(run_dir, "config.json"), encoding="utf-8"))
    assert config["resolved"]["data_path"] == os.path.join(run_dir, "examples.jsonl")


def test_version_picks_an_older_one(home_with_versions, tmp_path):
    from pet.commands.train import dataset_version_file
    from pet.train.trainer import TrainConfig

    home, _, ds = home_with_versions
    cfg, v, n = dataset_version_file(TrainConfig(out=str(tmp_path / "run")), 1, ds.store, home / "runs")
    assert (v, n) == (1, len(ds.get(1)))
    assert cfg.data == str(tmp_path / "run" / "examples.jsonl") and cfg.out == str(tmp_path / "run")
    assert [json.loads(x) for x in open(cfg.data, encoding="utf-8")] == ds.get(1)


def test_unknown_version_and_both_flags_are_clear_errors(home_with_versions, tmp_path):
    home, model, _ = home_with_versions
    r = _train(home, "--base", str(model), "--version", "7")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "no version 7" in r.stderr and "versions: 1, 2" in r.stderr
    r = _train(home, "--base", str(model), "--version", "1", "--data", str(tmp_path / "x.jsonl"))
    assert r.returncode == 2 and "argument --data: not allowed with argument --version" in r.stderr
