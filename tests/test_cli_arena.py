"""`python -m pet arena ratings|export` and `python -m pet compare` flags and errors."""

from __future__ import annotations

import json

import pytest

from pet import arena
from pet.cli import main
from pet.store import Store


def seed_votes(home, n=12):
    store = Store(home / "pet.db")
    for k in range(n):
        winner = ["a", "a", "b", "tie"][k % 4]
        arena.record_vote(store, {"id": f"cli{k}", "tier_a": "light" if k % 2 else "enhanced",
                                  "tier_b": "enhanced" if k % 2 else "light", "prompt": f"prompt {k}",
                                  "answer_a": f"left {k}", "answer_b": f"right {k}", "params": {"seed": k}},
                          winner, session="s")
    arena.record_vote(store, {"id": "cli0", "tier_a": "enhanced", "tier_b": "light", "prompt": "prompt 0",
                              "answer_a": "left 0", "answer_b": "right 0"}, "b", voter="judge", judge="power")
    return store


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("PET_HOME", str(tmp_path))
    return tmp_path


def test_ratings_from_database_json(home, capsys):
    store = seed_votes(home)
    assert main(["arena", "ratings", "--json", "--rounds", "200"]) == 0
    out = json.loads(capsys.readouterr().out)
    want = arena.ratings(arena.votes(store, "human"), rounds=200, seed=0)["table"]
    assert out == want
    assert {r["tier"] for r in out} == {"light", "enhanced"}
    assert all({"tier", "rating", "ci_low", "ci_high", "battles", "rank"} <= set(r) for r in out)
    assert sum(r["battles"] for r in out) == 24
    # cli0 has a human and a judge vote: with judges included it still counts once, as the human's vote.
    assert main(["arena", "ratings", "--json", "--rounds", "200", "--include-judges"]) == 0
    assert sum(r["battles"] for r in json.loads(capsys.readouterr().out)) == 24


def test_export_round_trips_into_ratings_file(home, tmp_path, capsys):
    seed_votes(home)
    out = tmp_path / "b.jsonl"
    assert main(["arena", "export", "--format", "battles", "--out", str(out)]) == 0
    assert "wrote 12 battles line(s)" in capsys.readouterr().out
    assert main(["arena", "ratings", "--json", "--rounds", "200"]) == 0
    from_db = json.loads(capsys.readouterr().out)
    db_file = home / "pet.db"
    mtime = db_file.stat().st_mtime_ns
    assert main(["arena", "ratings", "--votes", str(out), "--json", "--rounds", "200"]) == 0
    assert json.loads(capsys.readouterr().out) == from_db
    assert db_file.stat().st_mtime_ns == mtime  # the file route never touches the database
    prefs = tmp_path / "p.jsonl"
    assert main(["arena", "export", "--format", "preferences", "--out", str(prefs)]) == 0
    lines = [json.loads(x) for x in prefs.read_text().splitlines()]
    assert len(lines) == 9 and all(set(r) >= {"prompt", "chosen", "rejected"} for r in lines)


def test_ratings_text_output(home, capsys):
    seed_votes(home)
    assert main(["arena", "ratings", "--rounds", "100"]) == 0
    out = capsys.readouterr().out
    assert "rank" in out and "light" in out and "enhanced" in out and "12 votes, 100 bootstrap rounds" in out
    assert "left side won" in out and "judge next: " in out


def test_ratings_no_votes(home, capsys):
    assert main(["arena", "ratings"]) == 0
    assert "no votes yet" in capsys.readouterr().out
    assert main(["arena", "ratings", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_bad_votes_file_names_the_line(home, tmp_path, capsys):
    f = tmp_path / "v.jsonl"
    f.write_text('{"model_a": "x", "model_b": "y", "winner": "model_a"}\n{"model_a": "x", "model_b": "y"}\n')
    assert main(["arena", "ratings", "--votes", str(f)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "line 2: winner must be one of" in err and "Traceback" not in err
    assert not (home / "pet.db").exists()


def test_bad_flags_exit_2(home, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["arena", "ratings", "--rounds", "0"])
    assert e.value.code == 2 and "--rounds: must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["arena", "ratings", "--votes", str(tmp_path / "nope.jsonl")])
    assert e.value.code == 2 and "is not a file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["arena", "export", "--format", "csv", "--out", "x"])
    assert e.value.code == 2 and "invalid choice: 'csv'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["compare", "--tiers", "light,nosuch", "hello"])
    assert e.value.code == 2 and "unknown tier(s) nosuch" in capsys.readouterr().err


def test_export_to_missing_folder_is_a_clear_error(home, tmp_path, capsys):
    seed_votes(home)
    assert main(["arena", "export", "--format", "battles", "--out", str(tmp_path / "no" / "x.jsonl")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_judge_flags(home, capsys):
    with pytest.raises(SystemExit) as e:
        main(["arena", "judge", "--tier", "nosuch"])
    assert e.value.code == 2 and "unknown tier 'nosuch'" in capsys.readouterr().err
    assert main(["arena", "judge", "--tier", "light"]) == 0
    assert "no human-voted battle is waiting for judge light" in capsys.readouterr().out
