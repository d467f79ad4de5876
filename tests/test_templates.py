import pytest

from pet import PetError, templates

CONVO = [
    {"role": "system", "content": "You are PET."},
    {"role": "user", "content": "make this better: write a poem"},
    {"role": "assistant", "content": "You are a poet. Write a sonnet about rain.\n\nBlocks added: WHO, HOW."},
    {"role": "user", "content": "shorter, and café style ☕ 😀"},
]


def test_gemma3_folds_system_into_first_user_turn():
    text = templates.BUILTIN["gemma3"].render(CONVO)
    assert text == (
        "<bos><start_of_turn>user\nYou are PET.\n\nmake this better: write a poem<end_of_turn>\n"
        "<start_of_turn>model\nYou are a poet. Write a sonnet about rain.\n\nBlocks added: WHO, HOW.<end_of_turn>\n"
        "<start_of_turn>user\nshorter, and café style ☕ 😀<end_of_turn>\n<start_of_turn>model\n")


def test_roles_must_alternate_and_system_only_first():
    with pytest.raises(PetError, match="alternate"):
        templates.BUILTIN["gemma3"].render([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    with pytest.raises(PetError, match="system message may only come first"):
        templates.check_messages([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}])


def test_training_spans_cover_exactly_the_assistant_turns():
    msgs = CONVO[:3] + [{"role": "user", "content": "again"}, {"role": "assistant", "content": "Second."}]
    for name in ("gemma3", "chatml"):
        text, spans = templates.BUILTIN[name].training_text(msgs)
        assert len(spans) == 2
        first = text[spans[0][0]:spans[0][1]]
        assert first.startswith("You are a poet.") and "write a poem" not in first
        assert text[spans[1][0]:spans[1][1]].startswith("Second.")
        end = "<end_of_turn>" if name == "gemma3" else "<|im_end|>"
        assert end in text[spans[1][0]:spans[1][1]]  # the model learns where to stop


def test_choose_prefers_override_then_own_then_family():
    assert templates.choose("chatml", "{{ x }}", "gemma3").name == "chatml"
    own = templates.choose(None, "<|im_start|>{{ messages }}", "llama", eos_token="<|im_end|>")
    assert own.name.startswith("model's own") and "<|im_end|>" in own.stop
    assert templates.choose(None, None, "gemma3").name == "gemma3"
    with pytest.raises(PetError, match="carries no chat template"):
        templates.choose(None, None, "mystery")
    with pytest.raises(PetError, match="not known"):
        templates.choose("nope", None, None)


@pytest.mark.slow
def test_llamacpp_and_transformers_tokenise_the_rendered_conversation_identically(engine):
    """The string llama.cpp is given and transformers' apply_chat_template give the same ids."""
    from llama_cpp import Llama
    from transformers import AutoTokenizer

    from pet import models

    for tier, jinja in (("enhanced", templates.GEMMA3), ("light", None)):
        spec = engine.tiers.spec(tier)
        path = models.resolve(spec.model, spec.backend, engine.settings.path("models")).path
        llm = Llama(str(path), vocab_only=True, verbose=False)
        tmpl = engine.template_for(tier)
        ours = llm.tokenize(tmpl.render(CONVO).encode(), add_bos=False, special=True)
        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        kw = {"chat_template": jinja} if jinja else {}
        theirs = tok.apply_chat_template(CONVO, add_generation_prompt=True, tokenize=True, **kw)
        theirs = list(theirs["input_ids"]) if hasattr(theirs, "keys") else list(theirs)
        assert ours == theirs, tier
        assert len(ours) > 40


def test_the_engine_and_the_llamacpp_backend_choose_the_same_template(engine):
    """One template choice for a GGUF (gguf_template): the engine's vocabulary-only view and a loaded model agree."""
    from pet import models
    from pet.backends.llamacpp import LlamaCppBackend

    spec = engine.tiers.spec("light")
    backend = LlamaCppBackend(models.resolve(spec.model, spec.backend, engine.settings.path("models")).path,
                              n_ctx=256, template_override=spec.template, n_threads=1)
    backend.load()
    ours, served = engine.template_for("light"), backend.template
    assert (ours.name, tuple(ours.stop), ours.render(CONVO)) == (served.name, tuple(served.stop), served.render(CONVO))
