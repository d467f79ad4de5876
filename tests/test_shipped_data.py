"""The shipped examples: built from their reviewed batches, big enough, split by domain, and far from
the requests kept apart for judging and for tuning decoding."""

from __future__ import annotations

import json
from collections import Counter

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


def test_no_training_request_is_near_a_request_kept_apart():
    kept_apart = [build_dataset.words(json.loads(line)["request"]) for f in build_dataset.HELD_APART
                  for line in open(f, encoding="utf-8") if line.strip()]
    assert len(kept_apart) >= 50
    for r in dataset.read_jsonl(dataset.SHIPPED):
        w = build_dataset.words(dataset.first_user(r))
        assert max(build_dataset.jaccard(w, k) for k in kept_apart) < build_dataset.NEAR_FRESH
