"""The launched app, driven through gradio_client (the same API a script would use)."""

import time
import urllib.request

import pytest

from tests.conftest import start_app, stop_app


@pytest.mark.slow
def test_chat_streams_several_updates_and_ends_with_an_answer(app_url):
    from gradio_client import Client

    client = Client(app_url, verbose=False)
    job = client.submit(tier_name="light", message="improve this prompt: write a poem", mx=48, sd=7,
                        api_name="/chat")
    updates = list(job)
    assert len(updates) >= 5  # streamed, not one final blob
    conversation, _, stats_line = job.outputs()[-1]
    assert conversation[0]["role"] == "user"
    answer = conversation[-1]
    assert answer["role"] == "assistant"
    text = answer["content"][0]["text"] if isinstance(answer["content"], list) else answer["content"]
    assert len(text.split("<sub>")[0].split()) >= 3
    assert "tok/s" in stats_line and stats_line.startswith("light: TTFT")


def test_page_is_up_before_any_model_loads(tmp_path):
    from tests.conftest import make_home

    home = make_home(tmp_path / "home")
    proc, url = start_app(home, timeout=60)  # how fast (goal < 10 s): bench/startup.py measures it
    try:
        html = urllib.request.urlopen(url, timeout=5).read().decode()
        assert "PET Studio" in html
        log = (home / next(p.name for p in home.iterdir() if p.name.startswith("app-"))).read_text()
        assert "llama" not in log.lower()  # no model was loaded to serve the page
    finally:
        stop_app(proc)


def test_auth_protects_the_ui(tmp_path):
    from tests.conftest import free_port, make_home

    home = make_home(tmp_path / "home")
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    port = free_port()
    env = dict(os.environ, PET_HOME=str(home), PET_PORT=str(port), PET_AUTH="ann:secret")
    proc = subprocess.Popen([sys.executable, "-m", "pet", "serve"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=2) as r:
                    status = r.status
                break
            except urllib.error.HTTPError as e:
                status = e.code
                break
            except OSError:
                time.sleep(0.3)
        assert status == 401  # the app's config is not served without logging in
    finally:
        stop_app(proc)


def test_bad_tiers_file_stops_the_app_with_one_clear_message(tmp_path):
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    bad = tmp_path / "tiers.toml"
    bad.write_text('[tiers.a]\nbackend = "x"\n')
    env = dict(os.environ, PET_HOME=str(tmp_path / "home"), PET_TIERS=str(bad))
    r = subprocess.run([sys.executable, "app.py"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "tiers.a.backend: must be one of llamacpp, hf, ollama" in r.stderr and "tiers.a.model: required" in r.stderr


def test_blank_system_prompt_in_chat_means_the_tiers_own(engine, monkeypatch):
    """As in Compare: clearing the box (or passing sys_prompt="" to /chat) must not send a tuned tier out
    without the system prompt it was trained with; a typed one is used as given."""
    from pages.chat import respond

    seen = []
    real = engine.stream

    def recording(tier, messages, params, system=None, **kw):
        seen.append(system)
        return real(tier, messages, params, system=system, **kw)

    monkeypatch.setattr(engine, "stream", recording)
    for box in ("", "   ", "Be brief."):
        *_, last = respond(engine, "light", "write a poem about tea", [], [], box, 0.0, 1.0, 0, 8, 1)
        assert last[1][-1]["role"] == "assistant" and last[1][-1]["content"]
    assert seen == [None, None, "Be brief."]


def test_chat_says_under_an_answer_that_the_loop_guard_ended_it(engine, monkeypatch):
    """A looping answer is cut and marked (issue 11): the user sees why it stopped, not just a short answer."""
    from pages.chat import respond
    from pet.backends.base import Chunk
    from pet.decoding import guard_loops

    def looping(tier, messages, params, system=None, **kw):
        def gen():
            for k in range(1, 200):
                yield Chunk("a line of verse, ", k, 0.01 * k, 0.01)
        return guard_loops(gen())

    monkeypatch.setattr(engine, "stream", looping)
    *_, last = respond(engine, "light", "write a poem about autumn", [], [], "", 0.3, 0.9, 40, 64, 1)
    shown, hist, stats, _, line = last
    assert line.startswith("light: TTFT") and line.endswith("stopped: it began repeating itself (loop guard)")
    assert stats == [line] and hist[-1]["content"].count("a line of verse") < 10
