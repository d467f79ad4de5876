"""The benchmark's statistics, verdict parsing, prompt sets and stored runs (no model is loaded here)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pet import PetError, benchmark
from pet.benchmark import combine, paired_diff, parse_verdict
from pet.store import Store


# -- paired bootstrap -------------------------------------------------------------------------------------

def test_paired_diff_constant_shift_has_a_zero_width_interval():
    d = paired_diff([3.0, 5.0, 7.0, 9.0], [1.0, 3.0, 5.0, 7.0])
    assert d == {"diff": 2.0, "ci_low": 2.0, "ci_high": 2.0, "n": 4, "includes_zero": False}


def test_paired_diff_interval_covers_the_mean_and_detects_no_difference():
    rng = np.random.default_rng(1)
    a = rng.normal(0, 1, 40)
    b = a + rng.normal(0, 1, 40)  # no real difference: the interval must include zero
    d = paired_diff(list(a), list(b))
    assert d["ci_low"] < d["diff"] < d["ci_high"] and d["includes_zero"]
    shifted = paired_diff(list(a + 1.5), list(a + rng.normal(0, 0.5, 40)))
    assert not shifted["includes_zero"] and shifted["ci_low"] > 0


def test_paired_diff_pairs_by_prompt_and_skips_missing_values():
    d = paired_diff([1.0, None, 3.0, 5.0], [0.0, 9.0, None, 4.0])
    assert d["n"] == 2 and d["diff"] == 1.0
    assert paired_diff([1.0], [0.0]) is None  # one pair has no interval
    # Same data and seed, same interval: runs are reproducible.
    a, b = [1.0, 2.0, 4.0, 8.0, 3.0], [2.0, 2.0, 1.0, 5.0, 3.5]
    assert paired_diff(a, b) == paired_diff(a, b)


def test_mean_ci():
    m, ci = benchmark.mean_ci([1.0, None, 1.0, 1.0])
    assert m == 1.0 and ci == [1.0, 1.0]
    assert benchmark.mean_ci([None]) == (None, None)


# -- verdicts ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("reply, verdict", [
    ('{"verdict": "A"}', "a"), ('{"verdict":"B"}', "b"), ('{ "verdict" : "tie" }', "tie"),
    ('Sure. {"verdict": "b"} because B has a role.', "b"),
    ("A", None), ("Answer A is better", None), ("banana", None), ("", None),
    ('{"verdict": "C"}', None), ('{"winner": "A"}', None), ("{not json}", None),
])
def test_parse_verdict_is_strict(reply, verdict):
    assert parse_verdict(reply) == verdict


def test_combine_orders():
    # first order: A = the answer; second: A = the reference.
    assert combine("a", "b") == ("win", True)
    assert combine("b", "a") == ("loss", True)
    assert combine("tie", "tie") == ("tie", True)
    assert combine("a", "a") == ("tie", False)  # position bias: the orders disagree
    # An unreadable reply is unparsed, never a tie.
    assert combine(None, "b") == ("unparsed", None)
    assert combine("a", None) == ("unparsed", None)


def test_unparsed_verdicts_are_not_ties_in_the_summary():
    items = [{"metrics": {"pet_score": 50.0, "blocks": {k: 0.0 for k in benchmark.score.WEIGHTS},
                          "penalties": {k: 0.0 for k in benchmark.score.PENALTY_MAX}, "verdict": v,
                          "agreed": None if v == "unparsed" else True}}
             for v in ("unparsed", "unparsed", "win")]
    s = benchmark._summary("t", items, 100.0, 200)
    assert s["unparsed"] == 2 and s["ties"] == 0 and s["wins"] == 1
    assert s["win_rate"] == 1.0  # only the parsed verdict counts
    all_bad = benchmark._summary("t", items[:2], 100.0, 200)
    assert all_bad["win_rate"] is None


# -- prompt sets ------------------------------------------------------------------------------------------

def test_heldout_quick_subset_is_fixed():
    full = benchmark.load_prompts("heldout")
    quick = benchmark.load_prompts("heldout", quick=True)
    assert len(quick.items) == benchmark.QUICK_PROMPTS < len(full.items)
    assert quick.sha256 == benchmark.load_prompts("heldout", quick=True).sha256
    assert all(it["reference"] for it in full.items)
    assert len(benchmark.load_prompts("heldout", limit=3).items) == 3


def test_prompt_file_formats_and_errors(tmp_path):
    good = tmp_path / "p.jsonl"
    good.write_text('{"prompt": "write a poem"}\n\n'
                    '{"prompt": "plan a trip", "reference": "You are a travel agent."}\n'
                    '{"messages": [{"role": "user", "content": "fix my sql"}, {"role": "assistant", "content": "R"}]}\n')
    ps = benchmark.load_prompts(str(good))
    assert ps.items == [{"prompt": "write a poem", "reference": None},
                        {"prompt": "plan a trip", "reference": "You are a travel agent."},
                        {"prompt": "fix my sql", "reference": "R"}]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\nnot json\n{"text": "x"}\n{"prompt": "y", "reference": 3}\n')
    with pytest.raises(PetError) as e:
        benchmark.load_prompts(str(bad))
    msg = str(e.value)
    assert "3 bad line(s)" in msg and "line 2: not JSON" in msg and "line 3: needs" in msg and "line 4" in msg
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(PetError, match="no prompts"):
        benchmark.load_prompts(str(empty))


def test_config_problems_name_their_flags(engine, tmp_path):
    cfg = benchmark.BenchConfig(tiers=["nope"], judge="nobody", limit=0, split=str(tmp_path / "missing.jsonl"),
                                pairs=[("light", "light")], quick=True)
    probs = cfg.problems(engine)
    for flag in ("--tiers", "--judge", "--limit", "--split", "--pairs"):
        assert any(p.startswith(flag) for p in probs), (flag, probs)
    assert benchmark.BenchConfig(tiers=["light", "ollama:llama3"], judge="ollama:x").problems(engine) == []
    assert benchmark.parse_pairs("enhanced:base, a:b") == [("enhanced", "base"), ("a", "b")]
    with pytest.raises(PetError, match="--pairs"):
        benchmark.parse_pairs("enhanced")


# -- stored runs ------------------------------------------------------------------------------------------

def _fake_run(store, sha_items, judge=""):
    ps = benchmark.PromptSet([{"prompt": p, "reference": None} for p in sha_items], "test")
    item = {"idx": 0, "prompt": sha_items[0], "answer": "x", "metrics": {"pet_score": 10.0}}
    rid = benchmark.uuid.uuid4().hex[:12]
    benchmark.save(store, rid, ps, {"tiers": ["a"]}, judge, False,
                   [{"tier": "a", "pet_score": 10.0, "pet_score_ci": [9.0, 11.0]}], [], [], {"a": [item]}, 1.0)
    return rid


def test_runs_are_stored_and_grouped_by_comparability(tmp_path):
    store = Store(tmp_path / "pet.db")
    r1 = _fake_run(store, ["p1", "p2"])
    r2 = _fake_run(store, ["p1", "p2"])
    r3 = _fake_run(store, ["p1", "p3"])
    r4 = _fake_run(store, ["p1", "p2"], judge="light")
    got = {r["run_id"]: r["group"] for r in benchmark.runs(store)}
    assert got[r1] == got[r2] == "A"
    assert len({got[r1], got[r3], got[r4]}) == 3
    run = benchmark.get_run(store, r1)
    assert run["tiers"][0]["pet_score"] == 10.0 and run["n_prompts"] == 2
    assert benchmark.items(store, r1)[0]["metrics"] == {"pet_score": 10.0}
    hist = benchmark.history(store, "pet_score")
    assert [h["run_id"] for h in hist] == [r1, r2, r3, r4] and hist[0]["ci_low"] == 9.0
    with pytest.raises(PetError, match="no benchmark run"):
        benchmark.get_run(store, "nope")
    with pytest.raises(PetError, match="unknown metric"):
        benchmark.history(store, "nope")


def test_a_failed_save_leaves_no_half_written_run(tmp_path):
    store = Store(tmp_path / "pet.db")
    ps = benchmark.PromptSet([{"prompt": "p", "reference": None}], "test")
    bad_items = {"a": [{"idx": 0, "prompt": "p", "answer": "x", "metrics": {}},
                       {"idx": 0, "prompt": "p", "answer": "y", "metrics": {}}]}  # duplicate key: the insert fails
    with pytest.raises(Exception):
        benchmark.save(store, "r1", ps, {}, "", False, [], [], [], bad_items, 1.0)
    assert benchmark.runs(store) == []


def test_summary_json_shape():
    run = {"run_id": "abc", "source": "s", "n_prompts": 2, "prompts_sha": "h", "judge": "", "quick": True,
           "elapsed_s": 1.0, "skipped": [],
           "tiers": [{"tier": "a", "pet_score": 50.0, "win_rate": None, "tok_s": 10.0, "ttft_s": 0.1,
                      "ends_share": 1.0}],
           "comparisons": [{"a": "a", "b": "b", "metric": "pet_score", "diff": 1.0, "ci_low": 0.5, "ci_high": 1.5,
                            "n": 2, "includes_zero": False}]}
    out = json.loads(json.dumps(benchmark.summary_json(run)))
    assert out["run_id"] == "abc"
    assert {"tier", "pet_score", "win_rate", "tok_s", "ttft_s", "ends_share"} <= set(out["tiers"][0])
    assert set(out["comparisons"][0]) >= {"a", "b", "metric", "diff", "ci_low", "ci_high"}
