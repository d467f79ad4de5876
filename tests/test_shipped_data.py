"""The shipped examples: built from their reviewed batches, big enough, split by domain, and far from
the requests kept apart for judging and for tuning decoding."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

from pet import dataset
from scripts import build_dataset


def test_shipped_file_is_exactly_what_the_batches_build():
    rows, _ = build_dataset.build()
    assert build_dataset.OUT.read_text(encoding="utf-8") == "".join(
        json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def test_at_least_1000_examples_and_a_heldout_split_of_100_in_every_domain():
    rows = dataset.read_jsonl(dataset.SHIPPED)
    assert len(rows) >= 1000
    held = [r for r in rows if dataset.is_heldout(r)]
    assert len(held) >= 100
    per_domain = Counter(r["domain"] for r in held)
    assert len(per_domain) == 12 and min(per_domain.values()) >= 8


def test_every_example_records_its_provenance_and_language():
    rows = dataset.read_jsonl(dataset.SHIPPED)
    assert all(r.get("provenance") and r.get("language") for r in rows)
    assert len({r["language"] for r in rows}) >= 5


def _kept_apart() -> list[set]:
    """The words of every request kept out of training (the fresh and dev sets)."""
    return [build_dataset.words(json.loads(line)["request"]) for f in build_dataset.HELD_APART
            for line in open(f, encoding="utf-8") if line.strip()]


def test_no_training_request_is_near_a_request_kept_apart():
    kept_apart = _kept_apart()
    assert len(kept_apart) >= 50
    for r in dataset.read_jsonl(dataset.SHIPPED):
        w = build_dataset.words(dataset.first_user(r))
        assert max(build_dataset.jaccard(w, k) for k in kept_apart) < build_dataset.NEAR_FRESH


def test_a_new_batch_moves_no_example_between_train_and_heldout(tmp_path, monkeypatch):
    before = {dataset.example_key(r): r["split"] for r in build_dataset.build()[0]}
    for f in build_dataset.SOURCES.glob("*.jsonl"):
        (tmp_path / f.name).write_bytes(f.read_bytes())
    words = "otter quartz maple ferry violin cactus harbor lantern meadow walrus saffron glacier pepper " \
            "tundra pickle marble comet willow barley falcon".split()
    new = [{"messages": [{"role": "user", "content": f"{a} {b} {c} schedule"},  # 20 requests far apart
                         {"role": "assistant", "content": "You are an organiser.\n\nBlocks added: WHO."}],
            "domain": domain, "provenance": "test", "language": "en"}
           for (a, b, c), domain in zip(zip(words, words[7:] + words[:7], words[13:] + words[:13]),
                                         ["planning", "health", "legal", "creative"] * 5)]
    (tmp_path / "zz_new.jsonl").write_text("".join(json.dumps(r) + "\n" for r in new), encoding="utf-8")
    monkeypatch.setattr(build_dataset, "SOURCES", tmp_path)
    rows, _ = build_dataset.build()
    after = {dataset.example_key(r): r["split"] for r in rows}
    assert len(after) == len(before) + len(new)
    assert all(after[k] == split for k, split in before.items())
    added = [r for r in rows if dataset.example_key(r) not in before]
    assert added and all(r["split"] == ("heldout" if dataset.is_heldout({**r, "split": None}) else "train")
                         for r in added)


def test_onpolicy_training_files_keep_the_heldout_split_and_the_kept_apart_requests_out():
    """data/onpolicy/*_train.jsonl (corrections of a tier's own answers): their train rows are far from the
    judged requests and from every held-out request, and their held-out rows are the curated held-out split."""
    kept_apart = _kept_apart()
    curated_held = {dataset.example_key(r) for r in dataset.read_jsonl(dataset.SHIPPED) if dataset.is_heldout(r)}
    files = sorted((Path(dataset.SHIPPED).parent / "onpolicy").glob("*_train.jsonl"))
    assert files
    for f in files:
        rows = dataset.read_jsonl(f)
        assert not dataset.validate_examples(rows), f
        held = [r for r in rows if dataset.is_heldout(r)]
        assert {dataset.example_key(r) for r in held} == curated_held, f
        held_words = [build_dataset.words(dataset.first_user(r)) for r in held]
        for r in rows:
            if dataset.is_heldout(r):
                continue
            w = build_dataset.words(dataset.first_user(r))
            assert max(build_dataset.jaccard(w, k) for k in kept_apart) < build_dataset.NEAR_FRESH, (f, r)
            assert max(build_dataset.jaccard(w, k) for k in held_words) < build_dataset.NEAR_FRESH, (f, r)


def test_each_shipped_adapter_records_the_exact_file_it_was_last_trained_on():
    """run.json's data_file is in the repository, unchanged, its train split is what the adapter saw, and
    pet_adapter.json (what the app shows) names the same file."""
    root = Path(dataset.SHIPPED).parent.parent
    runs = sorted((root / "assets" / "adapters").glob("*/run.json"))
    assert len(runs) == 2
    for run in runs:
        rec = json.loads(run.read_text(encoding="utf-8"))
        assert not Path(rec["data_file"]).is_absolute(), (run, "data_file must be a repository path")
        data = root / rec["data_file"]
        assert data.is_file(), (run, rec["data_file"])
        assert hashlib.sha256(data.read_bytes()).hexdigest() == rec["data_file_sha256"], run
        train, held = dataset.split(dataset.read_jsonl(data))
        assert dataset.examples_sha256(train) == rec["data_sha256"], run
        assert (len(train), len(held)) == (rec["train_examples"], rec["heldout_examples"]), run
        info = json.loads((run.parent / "pet_adapter.json").read_text(encoding="utf-8"))
        assert (info["data_path"], info["data_sha256"]) == (rec["data_file"], rec["data_sha256"]), run
