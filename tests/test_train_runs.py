"""Training runs that go wrong or get cut short, on the tiny Gemma 3 of test_trainer: no held-out example
left after truncation, no evaluation better than the start, a kill and a resume, the process ending right
after its summary, and the progress (phases, ETA) a running job reports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pet import PetError
from tests.test_trainer import REPO, _run_cli, _wait, make_examples, make_tiny_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-runs")
    model = make_tiny_model(root / "model")
    data = root / "examples.jsonl"
    data.write_text("".join(json.dumps(e) + "\n" for e in make_examples()))
    return model, data


def _summary(r) -> dict:
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


# -- issue 8 item 2: no held-out example survives truncation ------------------------------------------------
def test_no_heldout_left_trains_without_evaluation_and_says_so(tiny, tmp_path):
    ex = make_examples(12)
    for i, e in enumerate(ex):
        e["split"] = "heldout" if i < 2 else "train"
    for e in ex[:2]:  # the held-out answers start after a request longer than --max-seq-len
        e["messages"][0]["content"] = "write about the sea " * 40
    data = tmp_path / "ex.jsonl"
    data.write_text("".join(json.dumps(e) + "\n" for e in ex))
    common = ["--base", str(tiny[0]), "--data", str(data), "--max-seq-len", "56", "--max-steps", "2"]

    # --keep-best and --early-stop need a held-out loss: refused before any work, naming the fix.
    for flag in (["--keep-best"], ["--early-stop", "2"]):
        bad = tmp_path / f"bad{len(flag)}"
        r = _run_cli(*common, *flag, "--out", str(bad))
        assert r.returncode == 1 and "Traceback" not in r.stderr
        assert "none of the 2 held-out examples keeps any of its answer within --max-seq-len 56" in r.stderr
        assert "--keep-best/--early-stop have no held-out loss to go by: raise --max-seq-len" in r.stderr
        assert json.loads((bad / "status.json").read_text())["state"] == "failed"
        assert not (bad / "metrics.jsonl").exists()  # refused before the first step

    out = tmp_path / "run"
    s = _summary(_run_cli(*common, "--out", str(out), "--json"))
    assert s["status"] == "finished" and s["steps"] == 2
    assert s["eval_loss_before"] is None and s["eval_loss_after"] is None and s["improved"] is None
    assert s["note"].startswith("no held-out example fits in --max-seq-len: trained without evaluation")
    final = json.loads((out / "final_eval.json").read_text())
    assert final["evaluation"] is False and final["adapter_is_start"] is False
    assert not any(r.get("eval_loss") is not None for r in _rows(out))
    assert "training without evaluation" in (out / "train.log").read_text()
    # The plain-text summary (what a user reads) says so too, instead of crashing on the missing loss.
    from pet.commands.train import summary_text

    assert "no held-out loss" in summary_text(s) and "note: no held-out example fits" in summary_text(s)


# -- issue 8 item 8: keep-best must not pass the untrained adapter off as a result ---------------------------
def test_keep_best_that_never_improves_is_not_an_upgrade(tiny, tmp_path):
    import torch
    from safetensors.torch import load_file

    from pet.config import Settings
    from pet.engine import Engine
    from pet.train import jobs

    import random

    home = tmp_path / "home"
    out = jobs.runs_dir(home) / "20250101-000000-keep"
    # Held-out answers unlike anything the training answers say: learning those makes them less likely,
    # so no evaluation beats the starting point.
    ex, rng = make_examples(24), random.Random(0)
    for i, e in enumerate(ex):
        e["split"] = "heldout" if i < 3 else "train"
    for e in ex[:3]:
        e["messages"][1]["content"] = " ".join("".join(rng.choice("qxzjvkw") for _ in range(5)) for _ in range(8))
    data = tmp_path / "ex.jsonl"
    data.write_text("".join(json.dumps(e) + "\n" for e in ex))
    s = _summary(_run_cli("--base", str(tiny[0]), "--data", str(data), "--max-steps", "3", "--eval-every", "1",
                          "--lr", "1e-2", "--keep-best", "--out", str(out), "--json"))
    final = json.loads((out / "final_eval.json").read_text())
    assert all(e["eval_loss"] > final["eval_loss_before"] for e in final["evals"][1:])  # the premise
    assert final["adapter_step"] == 0 and final["adapter_is_start"] is True and final["improved"] is False
    assert s["note"] == (f"no evaluation beat the starting point (held-out {final['eval_loss_before']:.4f}): "
                         "the result is the untrained starting adapter, not an upgrade")
    lora = load_file(out / "adapter" / "adapter_model.safetensors")
    assert all(torch.count_nonzero(v) == 0 for k, v in lora.items() if "lora_B" in k)  # it is the untrained one

    tiers = tmp_path / "tiers.toml"
    tiers.write_text(f'[tiers.tiny]\nbackend = "hf"\nmodel = "{tiny[0].resolve()}"\n')
    eng = Engine(Settings(home=home, tiers_path=tiers))
    with pytest.raises(PetError, match="no evaluation beat the starting point.*not offered as an upgrade"):
        jobs.use_adapter(eng, out.name, "tiny", new_name="tiny-ft")
    assert "tiny-ft" not in eng.tiers.names()
    from pages.train import result_text, usable

    run = jobs.info(out)
    assert usable(run) is False and "no evaluation beat the starting point" in result_text(run)


# -- issue 8 item 10: `pet train` ends right after its summary -------------------------------------------
def test_train_ends_without_interpreter_shutdown(tiny, tmp_path):
    # Interpreter shutdown after training (repeated full garbage collections over torch's and transformers'
    # objects) took minutes on a busy CPU. The process now ends with everything written: the atexit hook
    # a sitecustomize registers shows whether shutdown ran.
    hook, marker = tmp_path / "hook", tmp_path / "shutdown-ran"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(f"import atexit\natexit.register(open, {str(marker)!r}, 'w')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(hook), str(REPO)]))

    def run(*args):
        return subprocess.run([sys.executable, "-m", "pet", "train", *args], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=600)

    r = run("--lora-r", "0")  # a command that ends normally runs the hook: the probe works
    assert r.returncode == 2 and marker.exists()
    marker.unlink()
    out = tmp_path / "run"
    s = _summary(run("--base", str(tiny[0]), "--data", str(tiny[1]), "--max-steps", "1", "--out", str(out), "--json"))
    assert not marker.exists(), "interpreter shutdown ran after the summary"
    # Nothing was lost by skipping it: the summary line, the folder and its files are complete.
    assert s["status"] == "finished" and json.loads((out / "status.json").read_text())["state"] == "finished"
    assert (out / "adapter" / "adapter.gguf").stat().st_size > 0
    assert _rows(out)[-1]["final"] is True


def test_finished_status_does_not_wait_for_the_process(tmp_path):
    from pet.train import jobs

    # A child that is still alive (as a slow-exiting trainer was) but whose run says finished.
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "train"])
    try:
        run = jobs.runs_dir(tmp_path) / "20250101-000000-done"
        run.mkdir()
        (run / "status.json").write_text(json.dumps({"state": "finished", "pid": proc.pid, "step": 3}))
        assert jobs.info(run)["state"] == "finished"
        assert jobs.active(tmp_path) is None  # a new job may start
    finally:
        proc.kill()
        proc.wait()



def test_run_history_rows_and_the_run_a_page_shows(tmp_path):
    """What the Train tab shows comes from jobs: the history rows, the watched run, the last measured speed."""
    from pet.train import jobs

    def run(rid, status, **final):
        d = jobs.runs_dir(tmp_path) / rid
        d.mkdir()
        (d / "status.json").write_text(json.dumps(status))
        (d / "config.json").write_text(json.dumps({"tier": "enhanced", "resolved": {"source": "tier enhanced"}}))
        if final:
            (d / "final_eval.json").write_text(json.dumps(final))

    assert jobs.shown_run(tmp_path, None) is None and jobs.history_rows(jobs.list_runs(tmp_path)) == []
    run("20250101-000000-aaaa", {"state": "finished"}, eval_loss_before=2.345678, eval_loss_after=1.5,
        train_tokens_per_s=90.0)
    run("20250103-000000-cccc", {"state": "cancelled"}, eval_loss_before=2.0, eval_loss_after=None)
    (jobs.runs_dir(tmp_path) / "20250104-000000-none").mkdir()  # no status.json: not a run
    assert jobs.run_ids(tmp_path) == ["20250103-000000-cccc", "20250101-000000-aaaa"]
    assert jobs.history_rows(jobs.list_runs(tmp_path)) == [
        ["20250103-000000-cccc", "cancelled", "tier enhanced", 0, 2.0, ""],
        ["20250101-000000-aaaa", "finished", "tier enhanced", 0, 2.3457, 1.5]]
    assert jobs.measured_run(tmp_path, "enhanced")["train_tokens_per_s"] == 90.0
    assert jobs.measured_run(tmp_path, "light") is None
    # No job running: the run asked for, else the newest.
    assert jobs.shown_run(tmp_path, None)["id"] == "20250103-000000-cccc"
    assert jobs.shown_run(tmp_path, "20250101-000000-aaaa")["id"] == "20250101-000000-aaaa"
    assert jobs.shown_run(tmp_path, "20991231-000000-gone")["id"] == "20250103-000000-cccc"
    # A running job (older than the newest run) is shown unless another run is asked for.
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "train"])
    try:
        run("20250102-000000-live", {"state": "running", "pid": proc.pid, "step": 2})
        assert jobs.shown_run(tmp_path, None)["id"] == "20250102-000000-live"
        assert jobs.shown_run(tmp_path, "20250102-000000-live")["state"] == "running"
        assert jobs.shown_run(tmp_path, "20250101-000000-aaaa")["id"] == "20250101-000000-aaaa"
        assert jobs.shown_run(tmp_path, "20991231-000000-gone")["id"] == "20250102-000000-live"
    finally:
        proc.kill()
        proc.wait()

# -- issue 8 item 9: a killed run resumes where it stopped, with the same result ----------------------------
def test_killed_run_resumes_to_the_same_result(tiny, tmp_path, pet_home):
    import torch
    from safetensors.torch import load_file

    from pet.train import jobs

    flags = ["--base", str(tiny[0]), "--data", str(tiny[1]), "--max-steps", "10", "--eval-every", "3",
             "--save-every", "1", "--precision", "fp32", "--lr", "5e-3"]
    ref = tmp_path / "uninterrupted"
    whole = _summary(_run_cli(*flags, "--out", str(ref), "--json"))
    assert not (ref / "checkpoint").exists()  # a finished run keeps no checkpoint

    home = pet_home / "resume"
    out = jobs.runs_dir(home) / "20250101-000000-kill"
    proc = subprocess.Popen([sys.executable, "-m", "pet", "train", *flags, "--out", str(out)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    from pet.train.checkpoint import step_of

    deadline = time.monotonic() + 300
    while (step_of(out) or 0) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)  # poll fast: the kill must land before the last of the 10 steps
    proc.send_signal(signal.SIGKILL)  # no handler runs: what a crash or a power cut leaves
    proc.wait()
    run = jobs.info(out)
    killed_at = step_of(out)
    assert run["state"] == "interrupted" and run["resumable"] is True and 2 <= killed_at < 10

    jobs.resume(home, out.name)  # what the Train tab's Resume button calls
    run = _wait(lambda: (r := jobs.info(out))["state"] not in jobs.LIVE and r, timeout=300)
    assert run["state"] == "finished", jobs.log_tail(out)
    final = run["final"]
    assert final["resumed_from_step"] == killed_at and final["steps"] == 10
    assert f"resumed from the checkpoint at step {killed_at} of 10" in (out / "train.log").read_text()
    # Same batches, same dropout, same optimizer state: the same result as the run that was never killed.
    assert final["eval_loss_after"] == pytest.approx(whole["eval_loss_after"], rel=1e-5)
    a, b = load_file(out / "adapter" / "adapter_model.safetensors"), load_file(ref / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k].float(), b[k].float(), atol=1e-2, rtol=1e-2) for k in a)
    assert sum(float((a[k].float() - b[k].float()).abs().sum()) for k in a) < 1e-3 * sum(
        float(b[k].float().abs().sum()) for k in b)
    # The metrics read as one run: every step once, then the final line.
    steps = [r["step"] for r in _rows(out)]
    assert steps == list(range(11)) + [10] and _rows(out)[-1]["final"] is True


def test_resume_refusals(tiny, tmp_path):
    out = tmp_path / "done"
    _summary(_run_cli("--base", str(tiny[0]), "--data", str(tiny[1]), "--max-steps", "1", "--out", str(out), "--json"))
    r = _run_cli("--resume", str(out))
    assert r.returncode == 1 and f"run {out.name} has finished: nothing to resume" in r.stderr
    r = _run_cli("--resume", str(out), "--lr", "0.1")
    assert r.returncode == 2 and "--resume: a resumed run keeps its own settings; leave out --lr" in r.stderr
    r = _run_cli("--resume", "no-such-run")
    assert r.returncode == 1 and "--resume: no run 'no-such-run'" in r.stderr


# -- issue 8 item 14: phases and an ETA from measured speed ---------------------------------------------------
def test_eta_comes_from_measured_speed_including_evaluations():
    from pet.train.progress import Progress

    p = Progress(total_steps=10, eval_every=5, heldout_tokens=100, tokens_per_step=50)
    assert p.eta(0) is None  # nothing measured yet
    # During the first evaluation (20% done at 10 tokens/s): the rest of it, 10 steps at three forward
    # passes per token, and the evaluations at steps 5 and 10.
    assert p.eta(0, eval_left_s=8.0, eval_rate=10.0) == pytest.approx(8 + 10 * 50 * 3 / 10 + 2 * 100 / 10)
    p.record_eval(10.0, 100)
    assert p.evals_left(0) == 2 and p.evals_left(5) == 1 and p.evals_left(10) == 0
    p.record_step(30.0, 50)  # the first step (one-off costs) is used only until others are measured
    assert p.eta(1) == pytest.approx(30.0 * 9 + 10.0 * 2)
    p.record_step(4.0, 50)
    p.record_step(6.0, 50)
    assert p.eta(3) == pytest.approx(5.0 * 7 + 10.0 * 2)
    assert Progress(7, 3, 10, 5).evals_left(6) == 1  # the last step always evaluates
    assert Progress(4, None, 0, 5).evals_left(0) == 0  # a run without evaluation


def test_progress_shows_the_phase_and_its_own_progress():
    from pages.train import progress_html

    run = {"id": "r1", "state": "running", "step": 0, "total_steps": 1, "eta_s": 125.0, "phase": "evaluating",
           "phase_done": 5, "phase_total": 25, "phase_detail": "held-out loss at step 0", "final": {}}
    html = progress_html(run)
    assert "evaluating 5/25 (held-out loss at step 0) · step 0/1 · ETA 2m 05s" in html
    assert "width:20.0%" in html  # the bar follows the evaluation, not the (still zero) steps
    run.update(phase="training", step=3, total_steps=4, phase_done=3, phase_total=4, phase_detail=None, eta_s=None)
    assert "training · step 3/4 · ETA: measuring speed" in progress_html(run)


def test_a_run_reports_its_phases(tiny, tmp_path):
    out = tmp_path / "run"
    s = _summary(_run_cli("--base", str(tiny[0]), "--data", str(tiny[1]), "--max-steps", "2", "--eval-every", "1",
                          "--out", str(out), "--json"))
    log = (out / "train.log").read_text()
    order = ["loading: reading the examples", "loading: tokenising the examples", "loading: loading the model",
             "held-out loss before training", "step 1/2", "checkpointing: saving weights and optimizer at step 1",
             "step 2/2", "saving: writing the adapter", "finished after 2 steps"]
    at = [log.index(x) for x in order]
    assert at == sorted(at)
    rows = _rows(out)
    assert rows[-2]["eta_s"] == 0.0  # nothing left after the last step and its evaluation
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "finished" and status["phase"] is None and status["eta_s"] is None
    final = json.loads((out / "final_eval.json").read_text())
    assert final["eval_tokens_per_s"] > 0 and final["load_seconds"] > 0 and s["steps"] == 2
