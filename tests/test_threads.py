"""The CPU thread budget shared by serving and training (issue 13, item 1).

The speed it buys (chat during training against chat alone) is measured by
bench/chat_during_training.py, not asserted here.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from pet.config import ConfigError, Settings, ThreadBudget
from pet.train import jobs
from pet.train.trainer import TrainConfig, write_json

ENV = ("PET_THREADS", "PET_SERVE_THREADS", "PET_TRAIN_THREADS", "PET_MAX_JOBS")


@pytest.mark.parametrize("cores,serve,train", [(1, 1, 1), (2, 1, 1), (3, 1, 2), (8, 4, 4), (16, 8, 8)])
def test_default_budget_adds_up_to_the_machine(cores, serve, train):
    b = ThreadBudget.from_env({"PET_THREADS": str(cores)})
    assert (b.cores, b.serve, b.train, b.max_jobs) == (cores, serve, train, 1)
    if cores > 1:
        assert b.serve + b.train == cores
    assert b.serving(training_jobs=0) == cores  # alone, chat gets every core
    assert b.serving(training_jobs=1) == serve


def test_serve_threads_name_keeps_working_and_train_takes_the_rest():
    b = ThreadBudget.from_env({"PET_THREADS": "8", "PET_SERVE_THREADS": "2"})
    assert (b.serve, b.train) == (2, 6)
    b = ThreadBudget.from_env({"PET_THREADS": "8", "PET_SERVE_THREADS": "2", "PET_TRAIN_THREADS": "3",
                               "PET_MAX_JOBS": "2"})
    assert (b.serve, b.train, b.max_jobs) == (2, 3, 2)


def test_bad_thread_settings_name_the_variable_and_the_range():
    with pytest.raises(ConfigError) as e:
        ThreadBudget.from_env({"PET_THREADS": "many", "PET_SERVE_THREADS": "0", "PET_MAX_JOBS": "99"})
    assert e.value.problems == ["PET_THREADS: must be a whole number, got 'many'",
                                "PET_SERVE_THREADS: must be between 1 and 1024 threads, got 0",
                                "PET_MAX_JOBS: must be between 1 and 16 training jobs, got 99"]


def test_settings_carry_the_budget(monkeypatch, tmp_path):
    for k in ENV:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("PET_THREADS", "4")
    monkeypatch.setenv("PET_MAX_JOBS", "3")
    s = Settings.from_env(home=tmp_path)
    assert s.threads == ThreadBudget(cores=4, serve=2, train=2, max_jobs=3)
    monkeypatch.setenv("PET_TRAIN_THREADS", "-1")
    with pytest.raises(ConfigError, match="PET_TRAIN_THREADS: must be between 1 and 1024 threads, got -1"):
        Settings.from_env(home=tmp_path)


def test_child_env_caps_torch_and_every_blas_pool(tmp_path):
    env = jobs.child_env(tmp_path, 3, tmp_path / "tiers.toml")
    for k in ("PET_TRAIN_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        assert env[k] == "3", k
    assert env["PET_HOME"] == str(tmp_path) and env["PET_TIERS"] == str(tmp_path / "tiers.toml")


def fake_live_job(home: Path) -> subprocess.Popen:
    """A run folder whose status says running, owned by a live process named like a trainer."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "train"])
    run = jobs.runs_dir(home) / "20000101-000000-aaaa"
    run.mkdir(parents=True)
    write_json(run / "status.json", {"state": "running", "pid": proc.pid, "started": time.time()})
    return proc


def test_one_job_at_a_time_unless_the_limit_is_raised(tmp_path):
    home = tmp_path / "home"
    other = fake_live_job(home)
    try:
        # a config whose data file is missing: the child starts, applies its threads, and fails at once
        cfg = TrainConfig(tier=None, base=str(tmp_path / "no-model"), data=str(tmp_path / "missing.jsonl"))
        with pytest.raises(jobs.JobRunning, match=r"one job at a time \(PET_MAX_JOBS=1\).*raise PET_MAX_JOBS"):
            jobs.start(home, cfg, threads=ThreadBudget(cores=2, serve=1, train=1, max_jobs=1))
        run_id = jobs.start(home, cfg, threads=ThreadBudget(cores=2, serve=1, train=1, max_jobs=2))
        run_dir = jobs.runs_dir(home) / run_id
        deadline = time.monotonic() + 120
        while jobs.info(run_dir)["state"] in jobs.LIVE and time.monotonic() < deadline:
            time.sleep(0.3)
        got = jobs.info(run_dir)
        assert got["state"] == "failed" and "missing.jsonl not found" in got["error"], jobs.log_tail(run_dir)
        assert "using 1 CPU threads (PET_TRAIN_THREADS)" in jobs.log_tail(run_dir)
    finally:
        other.kill()
        other.wait()


def test_engine_serves_on_every_core_alone_and_on_its_share_while_training(tmp_path):
    from pet.engine import Engine

    home = tmp_path / "home"
    eng = Engine(Settings(home=home, threads=ThreadBudget(cores=6, serve=2, train=4)))
    assert eng.serve_threads() == 6
    job = fake_live_job(home)
    try:
        eng._jobs_seen = (-1.0, 0)  # the engine looks at the run folders at most once a second
        assert eng.training_jobs() == 1 and eng.serve_threads() == 2
    finally:
        job.kill()
        job.wait()
    eng._jobs_seen = (-1.0, 0)
    assert eng.serve_threads() == 6


@pytest.mark.slow
def test_llamacpp_thread_count_changes_between_requests(engine):
    import llama_cpp

    from pet.backends.base import collect
    from pet.config import GenParams

    b = engine.tiers.backend("light")
    b.set_threads(1)
    assert llama_cpp.llama_n_threads(b.llm.ctx) == 1 and llama_cpp.llama_n_threads_batch(b.llm.ctx) == 1
    msgs = [{"role": "user", "content": "write a haiku"}]
    assert collect(b.stream(msgs, GenParams(max_new_tokens=4, seed=1))).stats.tokens >= 1
    b.set_threads(2)
    assert llama_cpp.llama_n_threads(b.llm.ctx) == 2 and llama_cpp.llama_n_threads_batch(b.llm.ctx) == 2
    assert collect(b.stream(msgs, GenParams(max_new_tokens=4, seed=1))).stats.tokens >= 1
