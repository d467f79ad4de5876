import threading

import httpx
import ollama
import pytest

from pet.backends.base import BackendError, Clock, collect
from pet.backends.ollama import OllamaBackend, explain
from pet.config import GenParams

MSGS = [{"role": "system", "content": "You are PET."}, {"role": "user", "content": "improve: write a poem"}]


# -- Ollama: how the client's errors map to messages a user can act on ---------------------------

def test_ollama_server_down_is_a_status_not_a_crash():
    port = _closed_port()
    b = OllamaBackend("gemma3n:e4b", host=f"http://127.0.0.1:{port}")
    ok, why = b.probe()
    assert not ok and "no Ollama server answers" in why and "ollama serve" in why
    with pytest.raises(BackendError, match="no Ollama server answers"):
        list(b.stream(MSGS, GenParams()))


def test_ollama_error_mapping():
    e = explain(ollama.ResponseError('{"error":"model \\"gemma3n:e4b\\" not found, try pulling it first"}', 404),
                "gemma3n:e4b", "http://h:1")
    assert "ollama pull gemma3n:e4b" in str(e)
    assert "timed out" in str(explain(httpx.ReadTimeout("slow"), "m", "http://h:1"))
    assert "dropped mid-answer" in str(explain(httpx.RemoteProtocolError("eof"), "m", "http://h:1"))
    assert "HTTP 500" in str(explain(ollama.ResponseError("boom", 500), "m", "http://h:1"))
    assert "refused the request (401)" in str(explain(ollama.ResponseError("no", 401), "m", "http://h:1"))


def test_ollama_mid_stream_error_becomes_backend_error(monkeypatch):
    """The client raises ResponseError from inside the stream when the server sends an error line."""
    b = OllamaBackend("m", host="http://127.0.0.1:9")

    def chat(**kw):
        assert kw["options"]["num_predict"] == 7 and kw["options"]["seed"] == 3 and kw["stream"] is True
        yield {"message": {"content": "Hel"}, "done": False}
        raise ollama.ResponseError("out of memory")

    monkeypatch.setattr(b.client(), "chat", chat)
    got = []
    with pytest.raises(BackendError, match="mid-stream.*out of memory"):
        for ch in b.stream(MSGS, GenParams(max_new_tokens=7, seed=3)):
            got.append(ch.text)
    assert got == ["Hel"]


def test_ollama_stream_uses_server_token_count(monkeypatch):
    b = OllamaBackend("m", host="http://127.0.0.1:9")
    parts = [{"message": {"content": "a"}, "done": False}, {"message": {"content": "b"}, "done": False},
             {"message": {"content": ""}, "done": True, "eval_count": 5, "done_reason": "length"}]
    monkeypatch.setattr(b.client(), "chat", lambda **kw: iter(parts))
    ans = collect(b.stream(MSGS, GenParams()))
    assert ans.text == "ab" and ans.stats.tokens == 5 and ans.stats.finish_reason == "length"


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_clock_stats():
    c = Clock()
    a = c.chunk("x")
    b = c.chunk("y")
    assert (a.tokens, b.tokens) == (1, 2) and b.ttft_s == a.ttft_s and b.elapsed_s >= a.elapsed_s
    assert c.last("stop").done


# -- llama.cpp on the packaged SmolLM2 -----------------------------------------------------------

@pytest.fixture(scope="module")
def light(engine):
    return engine.tiers.backend("light")


@pytest.mark.slow
def test_llamacpp_streams_with_timing_and_seeds(light):
    p = GenParams(temperature=0.8, max_new_tokens=24, seed=42)
    a = collect(light.stream(MSGS, p))
    b = collect(light.stream(MSGS, p))
    assert a.text and a.text == b.text  # same seed, same answer
    assert 1 < a.stats.tokens <= 24 and a.stats.ttft_s > 0 and a.stats.tok_s > 0
    assert a.stats.finish_reason in ("stop", "length")


@pytest.mark.slow
def test_llamacpp_cancel_releases_the_model(light):
    gen = light.stream(MSGS, GenParams(max_new_tokens=200, temperature=0))
    next(gen)
    gen.close()  # what Stop does
    assert not light._lock.locked()
    done = threading.Event()
    threading.Thread(target=lambda: (collect(light.stream(MSGS, GenParams(max_new_tokens=4))), done.set())).start()
    assert done.wait(60)


@pytest.mark.slow
def test_context_overflow_is_trimmed_with_a_notice(light):
    long = [{"role": "user", "content": "word " * 3000}]
    ans = collect(light.stream(long, GenParams(max_new_tokens=4, temperature=0.0, seed=0)))
    # No exception: the answer ends normally (greedy SmolLM2 may end at once on a request cut to "word word …").
    assert ans.stats.finish_reason in ("stop", "length")
    assert "shortened your request" in ans.notice and "raise n_ctx" in ans.notice


def _goes_on_from(backend) -> tuple[str, str]:
    """(the rest of a greedy answer after its first words, what the backend writes given those words as a prefix)."""
    p = GenParams(temperature=0, max_new_tokens=24, repeat_penalty=1.0, seed=0)
    whole = collect(backend.stream(MSGS, p)).text
    cut = whole.rfind(" ", 0, len(whole) // 2)
    assert cut > 0, whole
    rest = collect(backend.stream(MSGS, p.with_overrides(max_new_tokens=4), prefix=whole[:cut])).text
    return whole[cut:], rest


@pytest.mark.slow
def test_llamacpp_goes_on_from_a_prefix_as_if_it_had_written_it(light):
    """echo_request writes the start of an answer and lets the model go on: the model must see it as its own."""
    whole_rest, rest = _goes_on_from(light)
    assert rest and whole_rest.startswith(rest)


# -- transformers on a tiny model built here -------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory, engine):
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from pet import models

    spec = engine.tiers.spec("light")
    gguf = models.resolve(spec.model, spec.backend, engine.settings.path("models")).path
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512)
    d = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return str(d)


@pytest.mark.slow
def test_hf_backend_streams_and_greedy_is_deterministic(tiny_hf):
    from pet.backends.hf import HFBackend

    b = HFBackend(tiny_hf)
    p = GenParams(temperature=0, max_new_tokens=6, repeat_penalty=1.0)
    chunks = list(b.stream(MSGS, p))
    assert chunks[-1].done and chunks[-1].tokens == 6 and chunks[-1].finish_reason == "length"
    assert sum(1 for c in chunks if c.text) >= 1
    assert collect(b.stream(MSGS, p)).text == "".join(c.text for c in chunks)
    assert b.template.name.startswith("model's own (chatml)")
    whole_rest, rest = _goes_on_from(b)
    assert rest and whole_rest.startswith(rest)


@pytest.mark.slow
def test_gguf_to_transformers_cache_is_reused(engine, monkeypatch):
    from pet import models

    spec = engine.tiers.spec("enhanced")
    ref = models.resolve(spec.model, "hf", engine.settings.path("models"))
    first = models.hf_folder(ref, engine.settings.path("cache", "hf"))  # converts once (cached across runs)
    import transformers

    def boom(*a, **k):
        raise AssertionError("converted the GGUF again instead of reusing the cache")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", boom)
    assert models.hf_folder(ref, engine.settings.path("cache", "hf")) == first


@pytest.mark.slow
@pytest.mark.parametrize("tier", ["enhanced", "light"])
def test_transformers_tokenizer_matches_llama_cpp_on_the_packaged_models(engine, tier):
    """Training reads the packaged GGUF through transformers, serving through llama.cpp: the two must split text
    into the same tokens, or the adapter learns sequences the served model never sees."""
    from transformers import AutoTokenizer

    from pet import models

    spec = engine.tiers.spec(tier)
    ref = models.resolve(spec.model, "hf", engine.settings.path("models"))
    tok = AutoTokenizer.from_pretrained(models.hf_folder(ref, engine.settings.path("cache", "hf")))
    assert models.tokenizer_mismatch(tok, ref.path) is None


@pytest.mark.slow
def test_a_tokenizer_that_differs_from_llama_cpp_is_refused_before_converting(engine, tmp_path, monkeypatch):
    """A transformers release that reads the GGUF's tokenizer differently (5.17 did, for Gemma 3) must stop the
    conversion with the fix named, and leave nothing half-written in the cache."""
    from tests.tiny_models import make_tiny
    from transformers import AutoTokenizer

    from pet import PetError, models

    ref = models.resolve(engine.tiers.spec("enhanced").model, "hf", engine.settings.path("models"))
    other = AutoTokenizer.from_pretrained(make_tiny(tmp_path / "tiny", "gemma3", layers=1))
    differs = models.tokenizer_mismatch(other, ref.path)
    assert differs and "tokens there" in differs and "in llama.cpp" in differs
    monkeypatch.setattr(models, "tokenizer_mismatch", lambda tok, gguf: differs)
    cache = tmp_path / "cache"
    with pytest.raises(PetError) as e:
        models.hf_folder(ref, cache)
    assert "reads this GGUF's tokenizer differently from llama.cpp" in str(e.value)
    assert "install a transformers release that matches" in str(e.value)
    assert not cache.exists() or list(cache.iterdir()) == []


def test_hub_gguf_offline_is_a_clear_error(tmp_path, monkeypatch):
    from pet import PetError, models

    import huggingface_hub.constants as hub

    # The hub reads HF_HUB_OFFLINE at import time, so set its constant: offline, it fails at once.
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    ref = models.resolve("someorg/some-repo/model.Q4_K_M.gguf", "llamacpp", tmp_path)
    assert ref.kind == "hub"
    with pytest.raises(PetError, match="could not fetch someorg/some-repo/model.Q4_K_M.gguf"):
        models.hub_gguf(ref)


def test_one_stats_line_for_stats_and_their_dict():
    from pet.backends.base import Chunk, Stats, stats_line

    st = Stats()
    st.update(Chunk("a", tokens=1, ttft_s=0.5, elapsed_s=0.5))
    st.update(Chunk("b", tokens=11, ttft_s=0.5, elapsed_s=1.5, done=True, finish_reason="stop"))
    assert (st.tokens, st.total_s, st.finish_reason, st.tok_s) == (11, 1.5, "stop", 10.0)
    assert st.line() == stats_line(st.as_dict()) == "TTFT 0.50 s · 10.0 tok/s · 11 tokens"
    assert stats_line({}) == "TTFT 0.00 s · 0.0 tok/s · 0 tokens"  # a column that never started
    assert Stats.of(None) == Stats() and Stats.of(Chunk("", tokens=3, ttft_s=0.1, elapsed_s=0.3)).tokens == 3


def test_the_stats_line_says_how_an_answer_ended_when_it_did_not_end_by_itself():
    from pet.backends.base import Stats, stats_line
    from pet.decoding import LOOP

    assert Stats(5, 0.1, 0.5, LOOP).line().endswith(" · stopped: it began repeating itself (loop guard)")
    assert stats_line({"tokens": 400, "finish_reason": "length"}).endswith(" · cut at the max-tokens limit")
    assert stats_line({"tokens": 3, "finish_reason": "cancelled"}).endswith(" · stopped before the end")
    assert Stats(5, 0.1, 0.5, "stop").line() == "TTFT 0.10 s · 10.0 tok/s · 5 tokens"
