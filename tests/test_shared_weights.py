"""Base and enhanced share one llama.cpp model (the LoRA set per request) and still answer exactly as
two separate models do: the same greedy tokens, whichever tier ran before."""

import pytest

from pet.backends.base import collect
from pet.config import GenParams
from pet.templates import with_system

pytestmark = pytest.mark.slow
P = GenParams(temperature=0, max_new_tokens=8, repeat_penalty=1.0)


@pytest.fixture(scope="module")
def separate(engine):
    """The two tiers as they were before: one Llama object each, the LoRA loaded with lora_path=."""
    from pet.backends.llamacpp import LlamaCppBackend

    enh, base = engine.tiers.backend("enhanced"), engine.tiers.backend("base")
    out = {"enhanced": LlamaCppBackend(enh.model_path, n_ctx=enh.n_ctx, lora_path=enh.lora_path,
                                       template_override="gemma3"),
           "base": LlamaCppBackend(base.model_path, n_ctx=base.n_ctx, template_override="gemma3")}
    for b in out.values():
        b.load()
    return out


def test_base_and_enhanced_share_one_model(engine):
    enh, base = engine.tiers.backend("enhanced"), engine.tiers.backend("base")
    assert enh.llm is base.llm and enh._lock is base._lock and enh.shared is base.shared
    assert enh.lora_path and not base.lora_path
    assert engine.tiers.backend("light").llm is not enh.llm  # another file: its own model


@pytest.mark.parametrize("order", [("enhanced", "base", "enhanced"), ("base", "enhanced", "base")])
def test_same_greedy_tokens_as_separate_models_in_any_order(engine, separate, order):
    msgs = with_system([{"role": "user", "content": "improve this prompt: write a poem about rain"}],
                       engine.tiers.spec("enhanced").system_prompt)
    expected = {t: collect(separate[t].stream(msgs, P)).text for t in set(order)}
    assert expected["enhanced"] != expected["base"], "the adapter must change the answer, or this proves nothing"
    for tier in order:
        got = collect(engine.tiers.backend(tier).stream(msgs, P))
        assert got.text == expected[tier], tier
        assert got.stats.tokens == 8
