"""pet.datastore: versions, restore, names, optimistic concurrency, and kills mid-write."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pet import PetError
from pet.dataset import DatasetError
from pet.datastore import DatasetStore, StaleVersion
from pet.store import Store

REPO = Path(__file__).resolve().parent.parent


def ex(user: str, answer: str = "You are an editor. Rewrite the request as a precise prompt.", **tags) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}], **tags}


@pytest.fixture
def seed(tmp_path) -> Path:
    p = tmp_path / "seed.jsonl"
    p.write_text("".join(json.dumps(ex(f"seed request {i}", domain="business")) + "\n" for i in range(5)))
    return p


@pytest.fixture
def ds(tmp_path, seed) -> DatasetStore:
    return DatasetStore(Store(tmp_path / "pet.db"), seed_path=seed)


def counts(db: Path) -> dict:
    s = Store(db)
    out = {t: s.query(f"SELECT count(*) FROM {t}")[0][0] for t in ("dataset_versions", "dataset_rows",
                                                                       "dataset_examples")}
    out["orphan_rows"] = s.query("SELECT count(*) FROM dataset_rows WHERE version NOT IN "
                                 "(SELECT id FROM dataset_versions)")[0][0]
    s.close()
    return out


def test_seeded_from_the_file_on_first_use(ds, seed):
    v, rows = ds.current()
    assert v == 1 and rows == [json.loads(line) for line in seed.read_text().splitlines()]
    assert ds.versions()[0]["note"] == "seeded from seed.jsonl"
    assert DatasetStore(ds.store, seed_path=seed).current() == (1, rows)  # seeded once, not twice


def test_absent_seed_gives_an_empty_dataset(tmp_path):
    s = DatasetStore(Store(tmp_path / "x.db"), seed_path=tmp_path / "missing.jsonl")
    assert s.current() == (1, [])
    assert s.versions()[0]["note"] == "empty dataset (no seed file)"


def test_add_save_versions_and_get(ds):
    v2 = ds.add([ex("a new request", domain="technical", techniques=["role"])], "from the arena")
    assert v2 == 2 and len(ds.get(2)) == 6 and ds.get(2)[-1]["techniques"] == ["role"]
    rows = ds.get(2)
    rows[0] = ex("an edited request")
    v3 = ds.save(rows, base_version=2, note="edited row 1")
    assert ds.current() == (3, rows)
    assert ds.get(1)[0]["messages"][0]["content"] == "seed request 0"  # old versions never change
    vs = ds.versions()
    assert [(x["id"], x["examples"], x["note"], x["parent"]) for x in vs] == [
        (3, 6, "edited row 1", 2), (2, 6, "from the arena", 1), (1, 5, "seeded from seed.jsonl", None)]
    # identical examples are stored once across versions
    assert counts(ds.store.path)["dataset_examples"] == 7


def test_get_returns_a_copy(ds):
    ds.get(1)[0]["messages"][0]["content"] = "mutated"
    assert ds.get(1)[0]["messages"][0]["content"] == "seed request 0"


def test_invalid_examples_are_refused_and_nothing_is_written(ds):
    before = counts(ds.store.path)
    bad = [ex("fine"), {"messages": [{"role": "user", "content": "no answer"}]}, ex("x", answer="")]
    with pytest.raises(DatasetError) as e:
        ds.add(bad, "bad")
    assert [str(p) for p in e.value.problems] == [
        "row 2, messages: missing answer: the conversation must end with an assistant message",
        "row 3, messages[1].content: empty answer: write the text or delete the message"]
    assert "nothing was written" in str(e.value)
    with pytest.raises(DatasetError):
        ds.save(bad, base_version=1)
    assert counts(ds.store.path) == before


def test_stale_save_is_refused_and_names_the_newer_version(tmp_path, seed):
    tab_a = DatasetStore(Store(tmp_path / "pet.db"), seed_path=seed)
    tab_b = DatasetStore(Store(tmp_path / "pet.db"), seed_path=seed)
    base_a, rows_a = tab_a.current()
    base_b, rows_b = tab_b.current()
    assert tab_a.save(rows_a + [ex("from tab A")], base_a, "tab A's edit") == 2
    with pytest.raises(StaleVersion) as e:
        tab_b.save(rows_b + [ex("from tab B")], base_b, "tab B's edit")
    assert str(e.value) == ("the dataset changed since you loaded it: you edited version 1, but version 2 (tab A's "
                            "edit) was saved since. Reload to see it, then make your change again; nothing was "
                            "overwritten")
    assert tab_b.current()[1][-1] == ex("from tab A")
    assert len(tab_b.versions()) == 2


def test_restore_is_a_new_version_and_loses_nothing(ds):
    ds.save([ex("only this")], 1, "replaced everything")
    v = ds.restore(1)
    assert v == 3 and ds.get(3) == ds.get(1) and ds.get(2) == [ex("only this")]
    assert ds.versions()[0]["note"] == "restored version 1"
    with pytest.raises(PetError, match=r"no version 99 in dataset 'default' \(versions: 1, 2, 3\)"):
        ds.restore(99)


def test_naming_versions(ds):
    ds.add([ex("another")], "x")
    ds.name_version(1, "  before cleanup ")
    assert ds.versions()[-1]["name"] == "before cleanup"
    assert ds.find("before cleanup") == 1 and ds.find("2") == 2
    with pytest.raises(PetError, match="the name 'before cleanup' is already version 1: choose another name"):
        ds.name_version(2, "before cleanup")
    assert ds.restore(ds.find("before cleanup")) == 3
    assert ds.versions()[0]["note"] == "restored version 1 (before cleanup)"
    ds.name_version(1, "")
    assert ds.versions()[-1]["name"] is None
    with pytest.raises(PetError, match="no version named 'nope'"):
        ds.find("nope")


KILL_SCRIPT = textwrap.dedent("""
    import json, os, sys, time
    from pet.datastore import DatasetStore
    from pet.dataset import parse_file
    from pet.store import Store

    db, seed, big, how, op = sys.argv[1:6]
    ds = DatasetStore(Store(db), seed_path=seed)
    real = DatasetStore._row_params

    def dying(self, version, shas):
        for n, params in enumerate(real(self, version, shas)):
            if n == 3000:  # midway through the import's rows, inside its transaction
                if how == "exit":
                    os._exit(9)
                print("midway", flush=True)
                time.sleep(60)
            yield params

    DatasetStore._row_params = dying
    rows = parse_file(big).examples
    if op == "save":  # an edit that replaces the whole dataset
        ds.save(ds.current()[1] + rows, ds.latest(), "big save")
    else:
        ds.add(rows, "big import")
""")


@pytest.mark.parametrize("how,op", [("sigkill", "add"), ("exit", "add"), ("sigkill", "save")])
def test_killed_import_or_save_leaves_the_old_version_intact(tmp_path, seed, how, op):
    db = tmp_path / "pet.db"
    ds = DatasetStore(Store(db), seed_path=seed)
    ds.add([ex("kept before the crash")], "before")
    before_rows, before = ds.get(2), counts(db)
    big = tmp_path / "big.jsonl"
    big.write_text("".join(json.dumps(ex(f"imported request {i}")) + "\n" for i in range(6000)))
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(db), str(seed), str(big), how, op],
                            cwd=REPO, stdout=subprocess.PIPE, text=True)
    if how == "sigkill":
        assert proc.stdout.readline().strip() == "midway"
        os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(60) == (-signal.SIGKILL if how == "sigkill" else 9)
    proc.stdout.close()
    after = DatasetStore(Store(db), seed_path=seed)
    assert after.current() == (2, before_rows)
    assert counts(db) == before and before["orphan_rows"] == 0
    # and the store still takes the next write
    assert after.add([ex("after the crash")], "next") == 3


class CountingLengths:
    """A stand-in tokenizer that counts its calls (one token per word)."""

    exact, ident = True, "words"

    def __init__(self):
        self.calls = 0

    def __call__(self, e):
        self.calls += 1
        return sum(len(m["content"].split()) for m in e["messages"])


def test_token_lengths_are_measured_once_per_example(ds):
    lengths = CountingLengths()
    assert ds.token_lengths(1, lengths) == [14] * 5 and lengths.calls == 5
    v = ds.add([ex("one more request here")], "x")
    assert ds.token_lengths(v, lengths) == [14] * 5 + [15] and lengths.calls == 6
    fresh = DatasetStore(Store(ds.store.path))
    assert fresh.token_lengths(v, lengths) == [14] * 5 + [15] and lengths.calls == 6
