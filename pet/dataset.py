"""Training examples: the {"messages": [...]} format, the fixed held-out split, loading.

An example is a dict: {"messages": [{"role", "content"}, ...], "domain": str, "techniques": [str]}
(domain and techniques are optional tags). The held-out split is fixed by a stable hash of the
example's first user turn, so it never moves when rows are added, edited elsewhere or reordered.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pet.config import REPO_ROOT

SHIPPED = REPO_ROOT / "data" / "pet_examples.jsonl"
HELDOUT_BUCKETS = 10  # 1 bucket in 10 is held out: about 10%


def first_user(example: dict) -> str:
    return next((m["content"] for m in example.get("messages", []) if m.get("role") == "user"), "")


def example_key(example: dict) -> str:
    """Stable identity of an example for the split: its normalised first user turn."""
    text = " ".join(first_user(example).lower().split())
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def is_heldout(example: dict) -> bool:
    return int(example_key(example)[:8], 16) % HELDOUT_BUCKETS == 0


def split(examples: list[dict]) -> tuple[list[dict], list[dict]]:
    train = [e for e in examples if not is_heldout(e)]
    held = [e for e in examples if is_heldout(e)]
    return train, held


def examples_sha256(examples: list[dict]) -> str:
    """SHA-256 of the exact examples (messages only, in order) a run trains on."""
    h = hashlib.sha256()
    for e in examples:
        h.update(json.dumps(e["messages"], ensure_ascii=False, sort_keys=True).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def read_jsonl(path: str | Path) -> list[dict]:
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                out.append(json.loads(line))
    return out
