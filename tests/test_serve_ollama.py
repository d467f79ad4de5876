"""PET's tiers over Ollama's API, driven by the official `ollama` client; the wire format is checked
against the client's own response models (code nobody here wrote). The light tier (SmolLM2 135M)
answers, with a few tokens per request. PET's Ollama backend is tested against this server too."""

import base64
import os
import subprocess
import sys
import time

import httpx
import ollama
import pytest
from ollama._types import ChatResponse, GenerateResponse, ListResponse, ProcessResponse, ShowResponse

from pet import templates
from pet.backends.base import Backend, BackendError, Clock, collect
from pet.config import GenParams
from tests.conftest import REPO, free_port

pytestmark = pytest.mark.slow
MSGS = [{"role": "user", "content": "improve this prompt: write a poem about rain"}]
GREEDY = {"temperature": 0, "num_predict": 6}


def fields(model) -> set[str]:
    return {f.alias or name for name, f in model.model_fields.items()}


def strict(obj: dict, model, ollama_also_sends: tuple[str, ...] = ()) -> None:
    """Every key PET sends is a field of the client's model (a misspelt key would be dropped silently),
    or one Ollama's own server sends that this client ignores (`name` in tags, `system` in show)."""
    extra = set(obj) - fields(model) - set(ollama_also_sends)
    assert not extra, f"keys the ollama client does not know: {extra}"
    model(**obj)


@pytest.fixture(scope="module")
def api(engine):
    from pet.serve_ollama import OllamaServer

    server = OllamaServer(engine, "127.0.0.1", 0).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(api):
    return ollama.Client(host=api.url, timeout=120)


def ndjson(url: str, path: str, body: dict, **kw) -> list[dict]:
    import json

    with httpx.stream("POST", url + path, json=body, timeout=120, **kw) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("application/x-ndjson")
        return [json.loads(line) for line in r.iter_lines() if line]


def test_version_tags_show_ps(api, client, engine):
    v = httpx.get(api.url + "/api/version").json()
    assert v["version"].count(".") == 2
    raw = httpx.get(api.url + "/api/tags").json()
    for m in raw["models"]:
        strict(m, ListResponse.Model, ("name",))
    names = [m.model for m in client.list().models]
    assert {"light:latest", "enhanced:latest", "base:latest"} <= set(names)
    show_raw = httpx.post(api.url + "/api/show", json={"model": "enhanced"}).json()
    strict(show_raw, ShowResponse, ("system",))
    show = client.show("pet-enhanced")
    assert show.template == templates.OLLAMA["gemma3"] and show.details.family == "gemma3"
    assert show.modelinfo["pet.backend"] == "llamacpp" and "PARAMETER num_ctx 2048" in show.modelfile
    client.generate(model="light", prompt="")  # an empty prompt loads the model, as in Ollama
    ps = httpx.get(api.url + "/api/ps").json()
    for m in ps["models"]:
        strict(m, ProcessResponse.Model)
    assert "light:latest" in [m.model for m in client.ps().models]


def test_streaming_chat_and_its_final_chunk(api, client, engine):
    lines = ndjson(api.url, "/api/chat", {"model": "light", "messages": MSGS, "options": GREEDY})
    for line in lines:
        strict(line, ChatResponse)
    *parts, last = lines
    assert parts and all(not p["done"] and p["message"]["role"] == "assistant" for p in parts)
    assert last["done"] and last["done_reason"] == "length" and last["eval_count"] == 6
    spec = engine.tiers.spec("light")
    prompt = engine.tiers.backend("light").prompt_tokens(templates.with_system(MSGS, spec.system_prompt))
    assert last["prompt_eval_count"] == len(prompt)
    for k in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(last[k], int) and last[k] >= 0, k
    assert last["total_duration"] >= last["prompt_eval_duration"] + last["eval_duration"] > 0
    text = "".join(p["message"]["content"] for p in parts)
    # the client, streaming and not, on the same greedy request
    streamed = list(client.chat(model="light:latest", messages=MSGS, stream=True, options=GREEDY))
    assert "".join(p.message.content for p in streamed) == text and streamed[-1].eval_count == 6
    whole = client.chat(model="light", messages=MSGS, stream=False, options=GREEDY)
    assert whole.message.content == text and whole.done_reason == "length"


def test_generate_honours_the_options(api, client):
    prompt = "improve this prompt: write a poem about rain"
    base = client.generate(model="pet-light", prompt=prompt, options={"temperature": 0, "num_predict": 12})
    strict(httpx.post(api.url + "/api/generate", json={"model": "light", "prompt": prompt, "stream": False,
                                                       "options": {"num_predict": 2}}).json(), GenerateResponse)
    # top_k 1 is greedy whatever the temperature
    top1 = client.generate(model="light", prompt=prompt, options={"temperature": 1.5, "top_k": 1, "num_predict": 12})
    assert top1.response == base.response and base.eval_count == 12
    # seed: the same sampled answer twice
    s1, s2 = (client.generate(model="light", prompt=prompt, options={"temperature": 1.0, "seed": 7, "num_predict": 8})
              for _ in range(2))
    assert s1.response == s2.response
    # stop: the answer ends before the stop string
    words = base.response.split()
    assert len(words) >= 3, base.response
    cut = base.response.index(words[2])
    stopped = client.generate(model="light", prompt=prompt, options={"temperature": 0, "num_predict": 12,
                                                                      "stop": [words[2]]})
    assert stopped.response == base.response[:cut] and stopped.done_reason == "stop"
    # num_ctx: a window ten tokens longer than the prompt is kept, prompt and answer together: the prompt
    # is trimmed to leave the answer a quarter of the window, and the answer stops at the window's end
    n = base.prompt_eval_count
    ctx = max(n + 10, 128)  # the smallest window the options accept is 128
    small = client.generate(model="light", prompt=prompt, options={"temperature": 0, "num_predict": 200,
                                                                    "num_ctx": ctx})
    assert small.prompt_eval_count <= n and small.prompt_eval_count + small.eval_count <= ctx
    assert small.eval_count < 200 and small.done_reason in ("length", "stop")
    # system replaces the tier's own system prompt
    other = client.generate(model="light", prompt=prompt, system="Answer in French.", options={"num_predict": 1})
    assert other.prompt_eval_count < n


def test_unknown_model_and_bad_requests(api, client):
    with pytest.raises(ollama.ResponseError) as e:
        client.chat(model="nope", messages=MSGS)
    assert e.value.status_code == 404 and 'model "nope" not found' in e.value.error
    r = httpx.post(api.url + "/api/generate", json={"model": "light:v2", "prompt": "x"})
    assert r.status_code == 404 and "not found" in r.json()["error"]
    r = httpx.post(api.url + "/api/chat", json={"model": "light", "messages": MSGS, "options": {"temperature": 5}})
    assert r.status_code == 400 and r.json()["error"].startswith("options.temperature: must be between 0 and 2")
    r = httpx.post(api.url + "/api/chat", json={"model": "light", "messages": [{"role": "tool", "content": "x"}]})
    assert r.status_code == 400 and "messages[0].role" in r.json()["error"]
    r = httpx.post(api.url + "/api/chat", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]


def test_a_client_that_disconnects_frees_the_model(api, client, engine):
    backend = engine.tiers.backend("light")
    with httpx.stream("POST", api.url + "/api/chat", timeout=60,
                      json={"model": "light", "messages": MSGS, "options": {"num_predict": 400}}) as r:
        next(r.iter_lines())
        assert backend._lock.locked()  # generating for this client
    deadline = time.monotonic() + 20
    while backend._lock.locked() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not backend._lock.locked(), "the model stayed busy after its client left"
    assert client.generate(model="light", prompt="hi", options={"num_predict": 2}).eval_count == 2


class _Flaky(Backend):
    """A model that fails after its first chunk (what a crashing server or a full disk looks like)."""

    def load(self):
        pass

    def stream(self, messages, params):
        clock = Clock()
        yield clock.chunk("Hel")
        raise BackendError("the model crashed")


def test_an_error_mid_stream(api, client, engine, monkeypatch):
    from dataclasses import replace

    engine.tiers.put(replace(engine.tiers.spec("light"), name="flaky"))
    monkeypatch.setitem(engine.tiers._backends, "flaky", _Flaky())
    lines = ndjson(api.url, "/api/chat", {"model": "flaky", "messages": MSGS})
    assert lines[0]["message"]["content"] == "Hel" and lines[-1] == {"error": "the model crashed"}
    got = []
    with pytest.raises(ollama.ResponseError, match="the model crashed"):
        for part in client.chat(model="flaky", messages=MSGS, stream=True):
            got.append(part.message.content)
    assert got == ["Hel"]
    # PET's own Ollama backend turns it into an error that says where it happened
    from pet.backends.ollama import OllamaBackend

    with pytest.raises(BackendError, match="mid-stream.*the model crashed"):
        list(OllamaBackend("flaky", host=api.url).stream(MSGS, GenParams()))


# -- PET's Ollama backend (official client) against this server ---------------------------------------

def test_ollama_backend_against_pets_server(api):
    from pet.backends.ollama import OllamaBackend

    b = OllamaBackend("light", host=api.url)
    assert b.probe() == (True, "")
    assert "enhanced:latest" in b.models()
    chunks = list(b.stream(MSGS, GenParams(temperature=0, max_new_tokens=5)))
    assert chunks[-1].done and chunks[-1].tokens == 5 and chunks[-1].finish_reason == "length"
    assert chunks[-1].prompt_tokens > 20 and chunks[0].ttft_s > 0
    assert collect(iter(chunks)).text == "".join(c.text for c in chunks) != ""
    ok, why = OllamaBackend("gemma3n:e4b", host=api.url).probe()
    assert not ok and "ollama pull gemma3n:e4b" in why
    with pytest.raises(BackendError, match="does not have model 'nope'"):
        list(OllamaBackend("nope", host=api.url).stream(MSGS, GenParams()))


def test_ollama_backend_when_the_server_is_gone(engine):
    from pet.backends.ollama import OllamaBackend
    from pet.serve_ollama import OllamaServer

    server = OllamaServer(engine, "127.0.0.1", 0).start()
    b = OllamaBackend("light", host=server.url)
    assert b.probe()[0]
    server.stop()
    ok, why = b.probe()
    assert not ok and "no Ollama server answers" in why
    with pytest.raises(BackendError, match="no Ollama server answers"):
        list(b.stream(MSGS, GenParams(max_new_tokens=2)))


# -- auth, browsers, and the CLI ------------------------------------------------------------------------

def test_auth_basic_and_bearer(engine):
    from pet.serve_ollama import OllamaServer

    server = OllamaServer(engine, "127.0.0.1", 0, auth=("pet", "s3cret")).start()
    try:
        with pytest.raises(ollama.ResponseError) as e:
            ollama.Client(host=server.url).list()
        assert e.value.status_code == 401
        r = httpx.get(server.url + "/api/tags")
        assert r.status_code == 401 and "Basic" in r.headers["www-authenticate"] and "unauthorized" in r.json()["error"]
        assert httpx.get(server.url + "/api/tags", headers={"Authorization": "Bearer wrong"}).status_code == 401
        bearer = ollama.Client(host=server.url, headers={"Authorization": "Bearer s3cret"})
        parts = list(bearer.chat(model="light", messages=MSGS, stream=True, options={"num_predict": 3}))
        assert parts[-1].done and parts[-1].eval_count == 3
        basic = ollama.Client(host=server.url, auth=("pet", "s3cret"))  # httpx's basic auth
        assert "light:latest" in [m.model for m in basic.list().models]
        token = base64.b64encode(b"pet:s3cret").decode()
        assert httpx.get(server.url + "/api/version", headers={"Authorization": f"Basic {token}"}).status_code == 200
        # a browser page on this machine: the preflight is answered without credentials
        pre = httpx.options(server.url + "/api/generate", headers={
            "Origin": "http://localhost:8080", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type"})
        assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "http://localhost:8080"
        far = httpx.options(server.url + "/api/generate", headers={
            "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in far.headers
    finally:
        server.stop()


def test_cli_serve_no_ui_with_auth(pet_home):
    port = free_port()
    env = dict(os.environ, PET_HOME=str(pet_home), PET_AUTH="u:p")
    proc = subprocess.Popen([sys.executable, "-m", "pet", "serve", "--no-ui", "--ollama-port", str(port)], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                r = httpx.get(url + "/api/version", timeout=2)
                break
            except httpx.HTTPError:
                assert proc.poll() is None, proc.stdout.read()
                time.sleep(0.2)
        assert r.status_code == 401
        assert httpx.get(url + "/api/version", auth=("u", "p")).json()["version"]
        assert httpx.get(url + "/").status_code == 401
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert f"Ollama API: http://127.0.0.1:{port}" in out


def test_cli_serve_port_in_use_is_one_clear_line(pet_home):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "pet", "serve", "--no-ui", "--ollama-port", str(port)], cwd=REPO,
                           env=dict(os.environ, PET_HOME=str(pet_home)), capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"cannot serve the Ollama API on 127.0.0.1:{port}" in r.stderr and "--ollama-port" in r.stderr
