"""Arena: Bradley-Terry ratings against a direct likelihood fit, intervals, ties, ridge, fair sides,
the judge's two-order logic, storage and export formats."""

from __future__ import annotations

import json
import math
import random
from collections import Counter

import numpy as np
import pytest

from pet import PetError, arena
from pet.store import Store

TRUE = {"t0": 1000.0, "t1": 1150.0, "t2": 900.0, "t3": 1300.0}


def synthetic(n: int, seed: int, tie_rate: float = 0.0) -> list[dict]:
    """Battles drawn from a Bradley-Terry model with the TRUE ratings (random pairs and sides)."""
    rng = np.random.default_rng(seed)
    names = list(TRUE)
    r = np.array([TRUE[k] for k in names])
    i = rng.integers(0, len(names), n)
    j = (i + rng.integers(1, len(names), n)) % len(names)
    p = 1 / (1 + 10 ** ((r[j] - r[i]) / 400))
    u = rng.random(n)
    tie = rng.random(n) < tie_rate
    win = np.where(tie, "tie", np.where(u < p, "a", "b"))
    return [{"tier_a": names[a], "tier_b": names[b], "winner": w, "voted": float(k)}
            for k, (a, b, w) in enumerate(zip(i, j, win))]


def direct_mle(rows: list[dict], ridge: float, iters: int = 4000) -> dict[str, float]:
    """Reference: gradient ascent on the per-vote penalised log-likelihood (no aggregation, no Newton)."""
    names = sorted({r["tier_a"] for r in rows} | {r["tier_b"] for r in rows})
    ix = {n: k for k, n in enumerate(names)}
    a = np.array([ix[r["tier_a"]] for r in rows])
    b = np.array([ix[r["tier_b"]] for r in rows])
    s = np.array([{"a": 1.0, "b": 0.0, "tie": 0.5, "bothbad": 0.5}[r["winner"]] for r in rows])
    theta = np.zeros(len(names))
    n = len(rows)
    for _ in range(iters):
        p = 1 / (1 + np.exp(-(theta[a] - theta[b])))
        g = np.zeros(len(names))
        np.add.at(g, a, s - p)
        np.add.at(g, b, p - s)
        g -= ridge * theta
        theta += 4.0 * g / n  # the mean log-likelihood's curvature is at most 1/4 per game and tier
    grad_norm = np.abs(g).max()
    assert grad_norm < 1e-6 * n, grad_norm  # the reference itself converged
    return {k: 1000 + 400 / math.log(10) * theta[ix[k]] for k in names}


def by_tier(res: dict) -> dict[str, dict]:
    return {r["tier"]: r for r in res["table"]}


def test_ratings_match_direct_likelihood_and_true_strengths():
    rows = synthetic(20000, seed=7)
    res = arena.ratings(rows, rounds=200, seed=1)
    got = by_tier(res)
    ref = direct_mle(rows, arena.RIDGE)
    for k in TRUE:
        assert abs(got[k]["rating"] - ref[k]) <= 1.0, (k, got[k]["rating"], ref[k])
    # Rating differences recover 400*log10 of the true strength ratios.
    for k in TRUE:
        assert abs((got[k]["rating"] - got["t0"]["rating"]) - (TRUE[k] - TRUE["t0"])) < 25, k
    assert [r["tier"] for r in res["table"]] == ["t3", "t1", "t0", "t2"]
    assert sum(r["rating"] for r in res["table"]) == pytest.approx(4000, abs=0.3)  # centred at 1000
    assert [r["rank"] for r in res["table"]] == [1, 2, 3, 4]
    assert sum(r["battles"] for r in res["table"]) == 2 * 20000


def test_ratings_with_ties_match_direct_likelihood():
    rows = synthetic(6000, seed=3, tie_rate=0.2)
    got = by_tier(arena.ratings(rows, rounds=0))
    ref = direct_mle(rows, arena.RIDGE)
    for k in TRUE:
        assert abs(got[k]["rating"] - ref[k]) <= 1.0


def test_intervals_narrow_as_votes_grow():
    widths = []
    for n in (300, 3000, 30000):
        res = by_tier(arena.ratings(synthetic(n, seed=11), rounds=500, seed=2))
        widths.append(np.mean([r["ci_high"] - r["ci_low"] for r in res.values()]))
        for r in res.values():
            assert r["ci_low"] < r["rating"] < r["ci_high"]
    # 10x the votes: about sqrt(10) ~ 3.2x narrower.
    assert 2.2 < widths[0] / widths[1] < 4.5, widths
    assert 2.2 < widths[1] / widths[2] < 4.5, widths


def test_ties_count_as_half_a_win_each_way():
    two_wins_two_ties = [{"tier_a": "x", "tier_b": "y", "winner": w} for w in ("a", "a", "tie", "bothbad")]
    three_one = [{"tier_a": "x", "tier_b": "y", "winner": w} for w in ("a", "a", "a", "b")]
    r1 = by_tier(arena.ratings(two_wins_two_ties, rounds=0))
    r2 = by_tier(arena.ratings(three_one, rounds=0))
    assert r1["x"]["rating"] == r2["x"]["rating"] and r1["y"]["rating"] == r2["y"]["rating"]
    assert r1["x"]["ties"] == 2 and r1["x"]["wins"] == 2 and r1["y"]["losses"] == 2
    even = by_tier(arena.ratings([{"tier_a": "x", "tier_b": "y", "winner": w} for w in ("tie", "tie", "a", "b")],
                                 rounds=0))
    assert even["x"]["rating"] == even["y"]["rating"] == 1000.0


def test_ridge_makes_three_one_sided_votes_converge():
    rows = [{"tier_a": "x", "tier_b": "y", "winner": "a"}] * 3
    b = arena.Battles.from_votes(rows)
    theta = arena.bradley_terry(b)
    assert np.all(np.isfinite(theta))
    t = theta[0]
    assert theta[1] == pytest.approx(-t)
    # Stationary point of 3*log(sigmoid(2t)) - ridge*t^2: 3*(1 - sigmoid(2t)) = ridge*t.
    assert 3 * (1 - 1 / (1 + math.exp(-2 * t))) == pytest.approx(arena.RIDGE * t, abs=1e-9)
    res = by_tier(arena.ratings(rows, rounds=100))
    assert res["x"]["rating"] > 1200 and res["y"]["rating"] < 800


def chi2_sf(x: float, k: int) -> float:
    """Survival function of the chi-square distribution (series for the regularised lower gamma)."""
    a, z = k / 2, x / 2
    term = total = 1 / a
    n = 1
    while term > 1e-15 * total:
        term *= z / (a + n)
        total += term
        n += 1
    return 1 - math.exp(a * math.log(z) - z - math.lgamma(a)) * total


def test_chi2_sf_matches_closed_form_for_even_dof():
    x = 7.3  # k = 4: sf = exp(-x/2) * (1 + x/2)
    assert chi2_sf(x, 4) == pytest.approx(math.exp(-x / 2) * (1 + x / 2), rel=1e-9)


def test_side_randomisation_is_fair():
    tiers = ["light", "enhanced", "power"]
    rng = random.Random(20240611)
    n = 6000
    draws = Counter(arena.draw_pair(tiers, rng) for _ in range(n))
    cells = [(a, b) for a in tiers for b in tiers if a != b]
    assert set(draws) == set(cells)  # never a tier against itself
    expected = n / len(cells)
    stat = sum((draws[c] - expected) ** 2 / expected for c in cells)
    assert chi2_sf(stat, len(cells) - 1) > 0.001, (stat, draws)
    left = Counter(a for (a, _), k in draws.items() for _ in range(k))
    sigma = math.sqrt(n * (1 / 3) * (2 / 3))
    for t in tiers:
        assert abs(left[t] - n / 3) < 4 * sigma, left
    for a, b in cells:  # each tier of a pair is on the left about half the time
        both = draws[(a, b)] + draws[(b, a)]
        assert abs(draws[(a, b)] - both / 2) < 4 * math.sqrt(both / 4)


def test_draw_pair_needs_two_tiers():
    with pytest.raises(PetError, match="only 'light' is available"):
        arena.draw_pair(["light"])
    with pytest.raises(PetError, match="no tier is available"):
        arena.draw_pair([])


def test_position_bias_and_next_pair():
    rows = ([{"tier_a": "x", "tier_b": "y", "winner": "a"}] * 30 + [{"tier_a": "y", "tier_b": "x", "winner": "b"}] * 10
            + [{"tier_a": "y", "tier_b": "x", "winner": "a"}] * 10 + [{"tier_a": "x", "tier_b": "y", "winner": "tie"}] * 5)
    res = arena.ratings(rows, rounds=200)
    pb = res["position_bias"]
    assert (pb["left_wins"], pb["decisive"], pb["rate"]) == (40, 50, 0.8)
    # Wilson 95% interval for 40 of 50, computed independently: scipy.stats.binomtest(40, 50)
    # .proportion_ci(method="wilson") gives (0.669629, 0.887562)
    assert (pb["ci_low"], pb["ci_high"]) == (0.6696, 0.8876)
    # (PET's z is 1.96, scipy's the exact 1.959964: they agree to about 3e-6)
    assert arena.wilson(40, 50) == pytest.approx((0.6696289, 0.8875625), abs=1e-5)
    # A pair that never met is the most useful next battle.
    assert res["next_pair"]["tier_a"] in ("x", "z") and arena.ratings(rows, rounds=50, tiers=["x", "y", "z"])[
        "next_pair"] == {"tier_a": "x", "tier_b": "z", "model_a": "x", "model_b": "z", "p_a_above": None, "battles": 0}
    wr = res["winrate"]
    assert wr["tiers"] == ["x", "y"] and wr["matrix"][0][0] is None
    assert wr["matrix"][0][1] == pytest.approx((30 + 10 + 2.5) / 55, abs=1e-4)
    assert wr["games"][0][1] == 55


def test_next_pair_is_the_least_certain_ordering():
    rows = ([{"tier_a": "a", "tier_b": "b", "winner": "a"}] * 40 + [{"tier_a": "a", "tier_b": "b", "winner": "b"}] * 5
            + [{"tier_a": "b", "tier_b": "c", "winner": "a"}] * 11 + [{"tier_a": "b", "tier_b": "c", "winner": "b"}] * 9
            + [{"tier_a": "a", "tier_b": "c", "winner": "a"}] * 40 + [{"tier_a": "a", "tier_b": "c", "winner": "b"}] * 4)
    nxt = arena.ratings(rows, rounds=300)["next_pair"]
    assert (nxt["tier_a"], nxt["tier_b"]) == ("b", "c") and 0.3 < nxt["p_a_above"] < 0.95


def test_rank_from_interval_overlap():
    rows = synthetic(400, seed=5)
    res = arena.ratings(rows, rounds=300)
    for row in res["table"]:
        above = [o for o in res["table"] if o["ci_low"] > row["ci_high"]]
        assert row["rank"] == 1 + len(above)
    assert res["table"][0]["rank"] == 1


def test_online_elo_depends_on_order_but_bt_does_not():
    rows = [{"tier_a": "x", "tier_b": "y", "winner": "a", "voted": k} for k in range(20)] + \
           [{"tier_a": "x", "tier_b": "y", "winner": "b", "voted": 20 + k} for k in range(20)]
    rev = [dict(r, voted=40 - r["voted"]) for r in rows]
    r1, r2 = arena.ratings(rows, rounds=0), arena.ratings(rev, rounds=0)
    assert r1["table"] == r2["table"]
    assert r1["elo"]["x"] < 1000 < r2["elo"]["x"]


# -- judge -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,want", [
    ("A", "a"), ("b.", "b"), (" **B** ", "b"), ("Tie", "tie"), ("[[A]]", "a"), ("[[C]]", "tie"),
    ("Verdict: B", "b"), ("The better answer is A because it adds a role.", "a"),
    ("Answer B is better", "b"), ("A. It has a clear format.", "a"), ("Both are equally good.", "tie"),
    ("It's a tie", "tie"), ("The better prompt improvement is A:\n<<<\nSHOP-UP!", "a"),
    ("Winner: (B)", "b"), ("Answer A is clearly better.", "a"), ("Final answer: B", "b"),
])
def test_parse_verdict(text, want):
    assert arena.parse_verdict(text) == (want, "")


@pytest.mark.parametrize("text", ["", "I like turtles", "As an AI...", "the answer is a good start",
                                  "a better prompt is a clear one"])
def test_parse_verdict_unreadable(text):
    v, note = arena.parse_verdict(text)
    assert v is None and note


def test_combine_orders():
    # second verdict is given with the answers swapped
    assert arena.combine_orders("a", "b") == "a"
    assert arena.combine_orders("b", "a") == "b"
    assert arena.combine_orders("a", "a") == "tie"  # judge always picks the first position: disagreement
    assert arena.combine_orders("tie", "tie") == "tie"
    assert arena.combine_orders("a", "tie") == "tie"
    assert arena.combine_orders(None, "b") is None  # an unreadable reply is no verdict, not a tie
    assert arena.combine_orders("a", None) is None


class FakeEngine:
    """Just enough engine for the judge: a real store and scripted judge replies."""

    def __init__(self, store, replies):
        self.store = store
        self.replies = list(replies)
        self.seen = []

    def params_for(self, tier, **kw):
        return kw

    def generate(self, tier, messages, params, system=None):
        self.seen.append((tier, messages[0]["content"], system, params))

        class A:
            text = self.replies.pop(0)
        return A()


def battle(bid="b1", tier_a="light", tier_b="enhanced", **kw) -> dict:
    return {"id": bid, "tier_a": tier_a, "tier_b": tier_b, "prompt": "write a poem", "system": None,
            "params": {"temperature": 0.3, "seed": 4}, "seed": 4, "answer_a": "ANSWER-LEFT", "answer_b": "ANSWER-RIGHT",
            "ident_a": {"tier": tier_a, "model": "pkg:x"}, "ident_b": {"tier": tier_b, "model": "pkg:y"},
            "stats_a": {"tokens": 5, "ttft_s": 0.1, "tok_s": 50.0}, "stats_b": {"tokens": 7, "ttft_s": 0.2, "tok_s": 40.0},
            **kw}


def test_judge_battle_both_orders_and_agreement(tmp_path):
    store = Store(tmp_path / "pet.db")
    arena.record_vote(store, battle("b1"), "a", session="s1")
    arena.record_vote(store, battle("b2"), "b", session="s1")
    arena.record_vote(store, battle("b3"), "tie", session="s1")
    eng = FakeEngine(store, ["A", "B",            # b1: picks left, then (swapped) right = same answer -> a
                             "A", "A",            # b2: always the first position -> tie
                             "blah", "[[A]]"])    # b3: unreadable first -> tie with a note
    r1 = arena.judge_battle(eng, "b1", "power")
    assert r1["winner"] == "a" and r1["verdicts"] == ["a", "b"]
    # the second call showed the answers swapped
    assert eng.seen[0][1].index("ANSWER-LEFT") < eng.seen[0][1].index("ANSWER-RIGHT")
    assert eng.seen[1][1].index("ANSWER-RIGHT") < eng.seen[1][1].index("ANSWER-LEFT")
    assert eng.seen[0][2] == arena.JUDGE_SYSTEM and eng.seen[0][3]["temperature"] == 0.0
    r2 = arena.judge_battle(eng, "b2", "power")
    assert r2["winner"] == "tie" and "orders disagree" in r2["note"]
    r3 = arena.judge_battle(eng, "b3", "power")
    assert r3["winner"] == arena.UNPARSED and "unparseable" in r3["note"]
    judged = arena.votes(store, "judge")
    assert [(v["id"], v["winner"], v["judge"]) for v in judged] == [("b1", "a", "power"), ("b2", "tie", "power"),
                                                                     ("b3", arena.UNPARSED, "power")]
    assert len(arena.votes(store, "human")) == 3
    agree = arena.judge_agreement(arena.votes(store))
    assert agree == [{"judge": "power", "votes": 2, "shared": 2, "agree": 1, "agreement": 0.5, "unparsed": 1}]
    assert arena.unjudged(store, "power") == [] and set(arena.unjudged(store, "light")) == {"b1", "b2", "b3"}


# -- storage and export ------------------------------------------------------------------------------

def test_vote_records_everything_and_is_changeable(tmp_path):
    store = Store(tmp_path / "pet.db")
    b = battle("b1")
    arena.record_vote(store, b, "a", session="sess-1")
    arena.record_vote(store, b, "bothbad", session="sess-1")
    rows = arena.votes(store)
    assert len(rows) == 1
    v = rows[0]
    assert (v["winner"], v["voter"], v["judge"], v["voter_session"]) == ("bothbad", "human", "", "sess-1")
    assert (v["tier_a"], v["tier_b"], v["prompt"], v["answer_a"], v["answer_b"]) == (
        "light", "enhanced", "write a poem", "ANSWER-LEFT", "ANSWER-RIGHT")
    assert v["params"] == {"temperature": 0.3, "seed": 4} and v["seed"] == 4
    assert v["ident_a"]["model"] == "pkg:x" and v["stats_b"]["tok_s"] == 40.0 and v["voted"] > 0
    with pytest.raises(PetError, match="winner must be one of"):
        arena.record_vote(store, b, "left")


def test_export_battles_round_trip_and_preferences(tmp_path):
    store = Store(tmp_path / "pet.db")
    for k, w in enumerate(["a", "b", "tie", "bothbad", "a"]):
        arena.record_vote(store, battle(f"b{k}", system="be brief" if k == 0 else None), w)
    rows = arena.votes(store)
    out = tmp_path / "battles.jsonl"
    assert arena.export(rows, "battles", out) == 5
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["winner"] for r in recs] == ["model_a", "model_b", "tie", "tie (bothbad)", "model_a"]
    assert recs[0]["conversation_a"] == [{"role": "system", "content": "be brief"},
                                         {"role": "user", "content": "write a poem"},
                                         {"role": "assistant", "content": "ANSWER-LEFT"}]
    assert recs[1]["conversation_b"][-1] == {"role": "assistant", "content": "ANSWER-RIGHT"}
    # model_a/_b name the rated model identity (tier + what it ran); tier_a/_b the tier names.
    assert all(r["tier_a"] == "light" and r["tier_b"] == "enhanced" and r["tstamp"] > 0 for r in recs)
    assert all((r["model_a"], r["model_b"]) == (rows[0]["key_a"], rows[0]["key_b"]) for r in recs)
    assert rows[0]["key_a"].startswith("light@") and rows[0]["key_b"].startswith("enhanced@")
    back = arena.read_battles(out)
    assert [(r["tier_a"], r["tier_b"], r["winner"]) for r in back] == [
        (v["tier_a"], v["tier_b"], v["winner"]) for v in rows]
    assert arena.ratings(back, rounds=100)["table"] == arena.ratings(rows, rounds=100)["table"]

    prefs = tmp_path / "prefs.jsonl"
    assert arena.export(rows, "preferences", prefs) == 3  # ties and both-bad carry no preference
    p = [json.loads(line) for line in prefs.read_text().splitlines()]
    assert p[0]["prompt"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "write a poem"}]
    assert p[0]["chosen"] == [{"role": "assistant", "content": "ANSWER-LEFT"}]
    assert p[1]["chosen"] == [{"role": "assistant", "content": "ANSWER-RIGHT"}]
    assert p[1]["rejected"] == [{"role": "assistant", "content": "ANSWER-LEFT"}]
    assert (p[1]["chosen_model"], p[1]["rejected_model"]) == ("enhanced", "light")
    assert not list(tmp_path.glob(".*.tmp"))


def test_read_battles_names_every_bad_line(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text("\n".join([
        json.dumps({"model_a": "x", "model_b": "y", "winner": "model_a"}),
        "{not json",
        json.dumps({"model_a": "x", "model_b": "y", "winner": "left"}),
        json.dumps({"model_a": "x", "winner": "tie"}),
        json.dumps({"model_a": "x", "model_b": "x", "winner": "tie"}),
        json.dumps([1, 2]),
    ]) + "\n")
    with pytest.raises(PetError) as e:
        arena.read_battles(f)
    msg = str(e.value)
    assert "5 bad line(s)" in msg
    assert "line 2: not valid JSON" in msg
    assert "line 3: winner must be one of model_a, model_b, tie, tie (bothbad), got 'left'" in msg
    assert "line 4: model_b must be a non-empty string" in msg
    assert "line 5: model_a and model_b are both 'x'" in msg
    assert "line 6: expected a JSON object, got list" in msg
    assert "line 1" not in msg


def test_judge_rows_in_a_file_are_skipped_unless_asked(tmp_path):
    f = tmp_path / "v.jsonl"
    f.write_text(json.dumps({"model_a": "x", "model_b": "y", "winner": "model_a"}) + "\n"
                 + json.dumps({"model_a": "x", "model_b": "y", "winner": "model_b", "voter": "judge"}) + "\n")
    assert len(arena.read_battles(f)) == 1 and len(arena.read_battles(f, include_judges=True)) == 2


def test_better_example_and_prompt_list():
    v = dict(battle(), winner="b")
    assert arena.better_example(v) == {"messages": [{"role": "user", "content": "write a poem"},
                                                    {"role": "assistant", "content": "ANSWER-RIGHT"}]}
    with pytest.raises(PetError, match="tie or both bad"):
        arena.better_example(dict(v, winner="tie"))
    assert arena.parse_prompt_list(" one \n\ntwo\none\n") == ["one", "two"]


def test_heldout_prompts_come_from_the_examples(tmp_path, monkeypatch):
    from pet import dataset

    exs = [{"messages": [{"role": "user", "content": f"request number {k}"},
                         {"role": "assistant", "content": "better"}]} for k in range(60)]
    held = [dataset.first_user(e) for e in exs if dataset.is_heldout(e)]
    assert 0 < len(held) < 60
    shipped = tmp_path / "pet_examples.jsonl"
    shipped.write_text("".join(json.dumps(e) + "\n" for e in exs))
    monkeypatch.setattr(dataset, "SHIPPED", shipped)
    assert arena.heldout_prompts() == (held, "pet_examples.jsonl")
    shipped.write_text("".join(json.dumps(e) + "\n" for e in exs[:20]))
    assert arena.heldout_prompts() == ([h for h in held if int(h.split()[-1]) < 20], "pet_examples.jsonl")


def test_send_better_answer_to_training_set(tmp_path):
    from pet import datastore

    store = Store(tmp_path / "pet.db")
    seed = tmp_path / "seed.jsonl"
    seed.write_text(json.dumps({"messages": [{"role": "user", "content": "seed request"},
                                             {"role": "assistant", "content": "seed answer"}]}) + "\n")
    ds = datastore.DatasetStore(store, seed_path=seed)
    before, rows_before = ds.current()
    with pytest.raises(PetError, match="vote on this battle first"):
        arena.send_to_training(store, "b9")
    arena.record_vote(store, battle("b9"), "tie")
    with pytest.raises(PetError, match="tie or both bad"):
        arena.send_to_training(store, "b9")
    arena.record_vote(store, battle("b9"), "b")
    version = arena.send_to_training(store, "b9")
    assert version > before
    _, rows = datastore.DatasetStore(store, seed_path=seed).current()
    assert len(rows) == len(rows_before) + 1
    assert rows[-1]["messages"] == [{"role": "user", "content": "write a poem"},
                                    {"role": "assistant", "content": "ANSWER-RIGHT"}]
    assert "battle b9" in datastore.DatasetStore(store, seed_path=seed).versions()[0]["note"]


def test_heldout_prompts_prefer_the_dataset_version(tmp_path):
    from pet import dataset

    store = Store(tmp_path / "pet.db")
    prompts, source = arena.heldout_prompts(store=store)
    assert source.startswith("dataset version ")
    if dataset.SHIPPED.exists():  # the store seeds itself from the shipped examples
        held = [dataset.first_user(e).strip() for e in dataset.read_jsonl(dataset.SHIPPED) if dataset.is_heldout(e)]
        assert prompts == list(dict.fromkeys(held)) and prompts


def test_any_ollama_model_can_judge_by_name(tmp_path):
    """`ollama:MODEL` judges without a tiers-file entry; with no server here it fails with what to do."""
    from pet.backends.base import BackendError
    from pet.config import Settings
    from pet.engine import Engine

    eng = Engine(Settings.from_env(home=tmp_path))
    arena.record_vote(eng.store, battle("b1"), "a", session="s1")
    assert "ollama:qwen3" not in eng.tiers.names()  # not offered in pickers or drawn into battles
    spec = eng.tiers.spec("ollama:qwen3")
    assert (spec.backend, spec.model) == ("ollama", "qwen3")
    st = eng.tiers.status("ollama:qwen3")
    assert st["available"] is False and "ollama serve" in st["reason"]
    with pytest.raises(BackendError, match="no Ollama server answers"):
        arena.judge_battle(eng, "b1", "ollama:qwen3")
    assert arena.votes(eng.store, "judge") == []  # a judge that could not answer leaves no vote


# -- issue 8, item 7: one vote per battle, and an unreadable judge reply is no verdict -----------------

def test_include_judges_counts_each_battle_once(tmp_path):
    store = Store(tmp_path / "pet.db")
    arena.record_vote(store, battle("h1"), "a", session="s")                      # human + two judges
    arena.record_vote(store, battle("h1"), "b", voter="judge", judge="j1")
    arena.record_vote(store, battle("h1"), "b", voter="judge", judge="j2")
    arena.record_vote(store, battle("j-agree"), "b", voter="judge", judge="j1")   # judges only, agreeing
    arena.record_vote(store, battle("j-agree"), "b", voter="judge", judge="j2")
    arena.record_vote(store, battle("j-split"), "a", voter="judge", judge="j1")   # judges only, split
    arena.record_vote(store, battle("j-split"), "b", voter="judge", judge="j2")
    rows = arena.votes(store)
    assert len(rows) == 7
    counted = {r["id"]: r["winner"] for r in arena.one_vote_per_battle(rows)}
    assert counted == {"h1": "a", "j-agree": "b", "j-split": "tie"}  # the human's vote wins over the judges'
    res = arena.ratings(rows, rounds=50)
    assert res["votes"] == 3 and sum(r["battles"] for r in res["table"]) == 6
    # The same votes through an exported battles file give the same ratings.
    out = tmp_path / "battles.jsonl"
    arena.export(rows, "battles", out)
    from_file = arena.ratings(arena.read_battles(out, include_judges=True), rounds=50)
    assert from_file["table"] == arena.ratings([dict(r, ident_a={}, ident_b={}) for r in rows], rounds=50)["table"]


def test_unreadable_judge_reply_is_stored_unparsed_and_never_rated(tmp_path):
    store = Store(tmp_path / "pet.db")
    arena.record_vote(store, battle("u1"), "a", session="s")
    eng = FakeEngine(store, ["I cannot decide which one", "[[A]]"])
    r = arena.judge_battle(eng, "u1", "power")
    assert r["winner"] == arena.UNPARSED and "unparseable reply" in r["note"]
    [stored] = arena.votes(store, "judge")
    assert (stored["winner"], stored["judge"]) == (arena.UNPARSED, "power")
    assert arena.unjudged(store, "power") == []  # not asked again
    only_judge = arena.ratings(arena.votes(store, "judge"), rounds=10)
    assert only_judge["table"] == [] and only_judge["votes"] == 0
    assert arena.ratings(arena.votes(store), rounds=10)["votes"] == 1  # the human vote alone
    assert arena.export(arena.votes(store), "battles", tmp_path / "b.jsonl") == 1
    with pytest.raises(PetError, match="winner must be one of"):
        arena.record_vote(store, battle("u2"), arena.UNPARSED, session="s")  # a human always gives a verdict


def test_a_database_from_before_unparsed_is_migrated_keeping_its_votes(tmp_path):
    import sqlite3

    old = arena.SCHEMA.replace(", 'unparsed'", "")
    assert "'unparsed'" not in old
    db = tmp_path / "pet.db"
    c = sqlite3.connect(db)
    c.executescript(old)
    c.execute("INSERT INTO arena_battles (id, created, tier_a, tier_b, prompt, params, answer_a, answer_b, ident_a,"
              " ident_b, stats_a, stats_b) VALUES ('old', 1, 'light', 'base', 'p', '{}', 'x', 'y', '{}', '{}', '{}', '{}')")
    c.execute("INSERT INTO arena_votes (battle_id, winner, voter, created) VALUES ('old', 'a', 'human', 2)")
    c.commit()
    c.close()
    store = Store(db)
    arena.record_vote(store, arena.get_battle(store, "old"), arena.UNPARSED, voter="judge", judge="power")
    assert sorted((v["voter"], v["winner"]) for v in arena.votes(store)) == [("human", "a"), ("judge", "unparsed")]


# -- issue 8, item 6: ratings belong to model identities, not tier names ----------------------------------

def test_a_swapped_adapter_is_rated_apart_and_marked(tmp_path, engine):
    import shutil

    store = Store(tmp_path / "pet.db")
    old = arena.identity(engine, "enhanced")  # the shipped adapter
    assert old["adapter_sha256"] == arena.adapter_sha256(old["adapter"]) and len(old["adapter_sha256"]) == 64
    new_dir = tmp_path / "runs" / "run-new" / "adapter"
    shutil.copytree(old["adapter"], new_dir)
    with open(new_dir / "adapter_model.safetensors", "ab") as f:
        f.write(b"retrained")  # other weights, same tier name
    new = dict(old, adapter=str(new_dir), adapter_sha256=arena.adapter_sha256(new_dir), adapter_meta={})
    light = arena.identity(engine, "light")
    legacy = {k: v for k, v in old.items() if k != "adapter_sha256"}  # a vote from before identities had hashes
    k = 0
    for ident, winner, n in ((old, "b", 6), (legacy, "b", 2), (new, "a", 8)):
        for _ in range(n):
            k += 1
            arena.record_vote(store, battle(f"v{k}", tier_a="enhanced", tier_b="light", ident_a=ident, ident_b=light),
                              winner, session="s")
    rows = arena.votes(store)
    key_old, key_new = arena.model_key("enhanced", old), arena.model_key("enhanced", new)
    assert key_old != key_new and {r["key_a"] for r in rows} == {key_old, key_new}  # legacy votes join the old key
    res = arena.ratings(rows, rounds=100, tiers=["enhanced", "light"],
                        current={"enhanced": key_new, "light": arena.model_key("light", light)})
    by_model = {r["model"]: r for r in res["table"]}
    assert set(by_model) == {key_old, key_new, arena.model_key("light", light)}
    was, now = by_model[key_old], by_model[key_new]
    assert (was["tier"], now["tier"]) == ("enhanced", "enhanced")
    assert (was["battles"], now["battles"]) == (8, 8)
    assert was["label"] == f"enhanced (adapter {old['adapter_meta']['label']}, replaced)" and not was["current"]
    assert now["label"] == "enhanced (adapter run-new, current)" and now["current"]
    assert by_model[arena.model_key("light", light)]["label"] == "light"
    assert now["rating"] > by_model[arena.model_key("light", light)]["rating"] > was["rating"]
    # The next battle is drawn among what the tiers run now.
    assert {res["next_pair"]["model_a"], res["next_pair"]["model_b"]} == {key_new, arena.model_key("light", light)}
    # Swapping the adapter marks a tier as changed even before its new model has a vote.
    only_old = arena.ratings([r for r in rows if r["key_a"] == key_old], rounds=20, current={"enhanced": key_new})
    assert [r["label"] for r in only_old["table"] if r["tier"] == "enhanced"] == [was["label"]]


# -- issue 8, item 18: no interval from too few votes; the recommended pair is the pair drawn ------------

def test_one_vote_gives_no_interval():
    one = arena.ratings([{"tier_a": "x", "tier_b": "y", "winner": "a"}], rounds=200)
    assert [r["enough_votes"] for r in one["table"]] == [False, False]
    assert all(r["ci_low"] == r["ci_high"] for r in one["table"])  # what used to be shown as "1230 - 1230"
    one_sided = arena.ratings([{"tier_a": "x", "tier_b": "y", "winner": "a"}] * 8, rounds=200)
    assert not any(r["enough_votes"] for r in one_sided["table"])  # every resample is the same: no spread
    many = arena.ratings(synthetic(200, seed=3), rounds=200)
    assert all(r["enough_votes"] and r["ci_high"] - r["ci_low"] > 1 for r in many["table"])


def test_ratings_cli_says_too_few_votes(tmp_path, monkeypatch, capsys):
    from pet.cli import main

    monkeypatch.setenv("PET_HOME", str(tmp_path))
    arena.record_vote(Store(tmp_path / "pet.db"), battle("only"), "a", session="s")
    assert main(["arena", "ratings", "--rounds", "50"]) == 0
    out = capsys.readouterr().out
    table = out.split("left side won")[0]
    assert table.count("too few votes") == 2 and " .. " not in table


def test_the_recommended_pair_is_the_pair_drawn():
    rows = [{"tier_a": "x", "tier_b": "y", "winner": "a"}] * 6 + [{"tier_a": "y", "tier_b": "z", "winner": "b"}] * 6
    res = arena.ratings(rows, rounds=100, tiers=["x", "y", "z"])
    want = {res["next_pair"]["tier_a"], res["next_pair"]["tier_b"]}
    assert want == {"x", "z"}  # the pair that never met
    rng = random.Random(0)
    draws = Counter(arena.draw_next(res, ["x", "y", "z"], rng) for _ in range(200))
    assert set(draws) == {("x", "z"), ("z", "x")}  # always that pair, sides at random
    assert min(draws.values()) > 60
    # An unavailable tier in the recommendation: two random available tiers instead.
    assert set(arena.draw_next(res, ["x", "y"], rng)) == {"x", "y"}


def test_pick_prompt_from_each_source(tmp_path):
    import random

    rng = random.Random(1)
    assert arena.pick_prompt("typed", "", "  my own  ") == "my own"
    with pytest.raises(PetError, match="type a prompt first"):
        arena.pick_prompt("typed", "a\nb", " ")
    assert arena.pick_prompt("list", "one\n\ntwo\n", "", rng=rng) in ("one", "two")
    with pytest.raises(PetError, match="your list is empty"):
        arena.pick_prompt("list", "\n \n", "typed is ignored")
    prompts, _ = arena.heldout_prompts(store=Store(tmp_path / "pet.db"))
    assert arena.pick_prompt("heldout", "", "", store=Store(tmp_path / "pet.db"), rng=rng) in prompts


def test_new_and_finished_battle_records():
    b = arena.new_battle("light", "enhanced", "write a poem", 0.3, 64, None, session="s1")
    assert (b["tier_a"], b["tier_b"], b["done"], b["voted"], b["session"]) == ("light", "enhanced", False, None, "s1")
    assert b["params"] == {"temperature": 0.3, "max_new_tokens": 64, "seed": b["seed"]} and 0 <= b["seed"] < 2**31
    assert arena.new_battle("a", "b", "p", 0, 1, 7)["seed"] == 7
    cols = [{"text": "L", "stats": {"tokens": 1}, "ident": {"tier": "light"}, "error": ""},
            {"text": "R", "stats": None, "ident": {"tier": "enhanced"}, "error": ""}]
    done = arena.finish_battle(dict(b), cols)
    assert (done["answer_a"], done["answer_b"], done["stats_b"], done["ident_b"], done["done"]) == \
        ("L", "R", {}, {"tier": "enhanced"}, True)
    failed = arena.finish_battle(dict(b), [cols[0], dict(cols[1], error="no model")])
    assert failed["done"] is False and failed["created"] > 0


def test_a_vote_on_a_battle_the_session_has_moved_past_is_refused():
    """pages.arena keeps, per browser session, the battle its last "New battle" started: a vote that still
    holds the battle before is superseded (the Arena refuses it), other sessions are not affected."""
    from pages import arena as page

    page._started("s1", "old")
    assert not page.superseded("s1", "old")
    page._started("s1", None)  # New battle clicked: the next battle is being drawn
    assert page.superseded("s1", "old")
    page._started("s1", "new")
    assert page.superseded("s1", "old") and not page.superseded("s1", "new")
    assert not page.superseded("s2", "anything") and not page.superseded(None, "old")
