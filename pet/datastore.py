"""Versioned training examples in SQLite: every save is a new, immutable version.

A version is a list of rows pointing at content-addressed examples, so a 10,000-row dataset
edited a hundred times stores each distinct example once. Each save, import and restore is
one transaction: a crash or a kill mid-write leaves the previous version as it was, with no
partial rows. Saves carry the version they were based on, so a second browser tab editing an
older version is refused instead of silently overwriting the first one's work.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

from pet import PetError
from pet.dataset import SHIPPED, DatasetError, examples_sha256, normalise, parse_file, validate_examples

DDL = """
CREATE TABLE IF NOT EXISTS dataset_examples (
    sha TEXT PRIMARY KEY,
    body TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dataset_versions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    dataset TEXT NOT NULL,
    parent INTEGER,
    created REAL NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    name TEXT,
    n INTEGER NOT NULL,
    sha256 TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS dataset_versions_name ON dataset_versions(dataset, name);
CREATE INDEX IF NOT EXISTS dataset_versions_dataset ON dataset_versions(dataset, id);
CREATE TABLE IF NOT EXISTS dataset_tokens (
    sha TEXT NOT NULL,
    tokenizer TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (sha, tokenizer)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dataset_rows (
    version INTEGER NOT NULL REFERENCES dataset_versions(id),
    pos INTEGER NOT NULL,
    sha TEXT NOT NULL REFERENCES dataset_examples(sha),
    PRIMARY KEY (version, pos)
) WITHOUT ROWID;
"""


class StaleVersion(PetError):
    """A save based on a version that is no longer the latest."""

    def __init__(self, base: int, latest: int, note: str):
        self.base, self.latest = base, latest
        super().__init__(f"the dataset changed since you loaded it: you edited version {base}, but version "
                         f"{latest} ({note or 'no note'}) was saved since. Reload to see it, then make your "
                         "change again; nothing was overwritten")


def _body(ex: dict) -> tuple[str, str]:
    body = json.dumps(ex, ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(body.encode("utf-8")).hexdigest(), body


class DatasetStore:
    """The versions of one dataset (default: "default", seeded from data/pet_examples.jsonl)."""

    def __init__(self, store, seed_path: str | Path | None = None, dataset: str = "default"):
        self.store = store
        self.seed_path = Path(seed_path) if seed_path is not None else SHIPPED
        self.dataset = dataset
        self._cache: OrderedDict[int, list[dict]] = OrderedDict()  # versions never change: cache a few
        self._seeded = False
        store.ensure(DDL)

    # --- reading ---

    def latest(self) -> int:
        self._seed()
        return self._latest(self.store.conn())

    def _latest(self, c) -> int:
        row = c.execute("SELECT max(id) FROM dataset_versions WHERE dataset=?", (self.dataset,)).fetchone()
        return row[0] or 0

    def current(self) -> tuple[int, list[dict]]:
        v = self.latest()
        return v, self.get(v)

    def get(self, version_id: int) -> list[dict]:
        """The examples of one version (a fresh copy the caller may change)."""
        self._seed()
        version_id = int(version_id)
        if version_id not in self._cache:
            self._check(self.store.conn(), version_id)
            rows = self.store.query("SELECT e.body FROM dataset_rows r JOIN dataset_examples e ON e.sha = r.sha "
                                    "WHERE r.version=? ORDER BY r.pos", (version_id,))
            self._cache[version_id] = [json.loads(r[0]) for r in rows]
            while len(self._cache) > 4:
                self._cache.popitem(last=False)
        self._cache.move_to_end(version_id)
        return json.loads(json.dumps(self._cache[version_id]))

    def versions(self) -> list[dict]:
        """Newest first: id, name, note, created (epoch seconds), examples, parent, sha256."""
        self._seed()
        rows = self.store.query("SELECT id, name, note, created, n, parent, sha256 FROM dataset_versions "
                                "WHERE dataset=? ORDER BY id DESC", (self.dataset,))
        return [{"id": r["id"], "name": r["name"], "note": r["note"], "created": r["created"],
                 "examples": r["n"], "parent": r["parent"], "sha256": r["sha256"]} for r in rows]

    def token_lengths(self, version_id: int, lengths) -> list[int]:
        """Token length of each row of a version, cached in SQLite per example and tokenizer: tokenizing
        costs about 3 ms an example on a CPU, so a 10,000-row dataset is measured once, not on every view."""
        examples = self.get(version_id)
        shas = [_body(e)[0] for e in examples]
        if not lengths.exact:
            return [lengths(e) for e in examples]
        known = {}
        for i in range(0, len(shas), 500):  # SQLite caps the number of bound parameters
            chunk = list(set(shas[i:i + 500]))
            q = ",".join("?" * len(chunk))
            known.update(self.store.query(f"SELECT sha, n FROM dataset_tokens WHERE tokenizer=? AND sha IN ({q})",
                                          (lengths.ident, *chunk)))
        new = {sha: lengths(e) for sha, e in zip(shas, examples) if sha not in known}
        if new:
            with self.store.transaction() as c:
                c.executemany("INSERT OR REPLACE INTO dataset_tokens(sha, tokenizer, n) VALUES (?, ?, ?)",
                              [(sha, lengths.ident, n) for sha, n in new.items()])
        known.update(new)
        return [known[s] for s in shas]

    def _check(self, c, version_id: int) -> None:
        row = c.execute("SELECT 1 FROM dataset_versions WHERE id=? AND dataset=?",
                        (version_id, self.dataset)).fetchone()
        if row is None:
            have = [r[0] for r in c.execute("SELECT id FROM dataset_versions WHERE dataset=? ORDER BY id",
                                            (self.dataset,))]
            raise PetError(f"no version {version_id} in dataset {self.dataset!r} (versions: "
                           f"{', '.join(map(str, have[-20:])) or 'none'}); see `python -m pet data versions`")

    # --- writing: each call is one transaction ---

    def add(self, examples: list[dict], note: str = "") -> int:
        """Append validated examples to the latest version, as a new version."""
        new = self._valid(examples)
        self._seed()
        with self.store.transaction() as c:
            base = self._latest(c)
            old = self._shas(c, base)
            return self._write(c, base, old + list(self._put(c, new)), note or f"added {len(new)} example(s)")

    def save(self, examples: list[dict], base_version: int, note: str = "") -> int:
        """Replace the dataset with `examples`, unless someone saved after `base_version` (StaleVersion)."""
        new = self._valid(examples)
        self._seed()
        with self.store.transaction() as c:
            latest = self._latest(c)
            if int(base_version) != latest:
                row = c.execute("SELECT note FROM dataset_versions WHERE id=?", (latest,)).fetchone()
                raise StaleVersion(int(base_version), latest, row[0] if row else "")
            return self._write(c, latest, list(self._put(c, new)), note or "saved")

    def restore(self, version_id: int) -> int:
        """A new version equal to an old one: restoring never deletes anything."""
        self._seed()
        version_id = int(version_id)
        with self.store.transaction() as c:
            self._check(c, version_id)
            label = c.execute("SELECT name FROM dataset_versions WHERE id=?", (version_id,)).fetchone()[0]
            shas = self._shas(c, version_id)
            note = f"restored version {version_id}" + (f" ({label})" if label else "")
            return self._write(c, self._latest(c), shas, note)

    def name_version(self, version_id: int, name: str | None) -> None:
        """Give a version a name (unique in the dataset); an empty name removes it."""
        self._seed()
        name = (name or "").strip() or None
        if name is not None and len(name) > 100:
            raise PetError(f"a version name may be at most 100 characters, got {len(name)}")
        if name is not None:
            # A name is a label, but labels end up in file names and commands: no paths, no control
            # characters, and not a bare number (`data export --version 3` means version 3).
            if any(c in name for c in "/\\") or name.startswith(".") or ".." in name:
                raise PetError(f"version name {name[:100]!r}: no '/', '\\', '..' or leading '.'; "
                               "use words, e.g. 'before cleanup'")
            if any(ord(c) < 32 or ord(c) == 127 for c in name):
                raise PetError("a version name may not contain control characters (tabs, newlines)")
            if name.isdigit():
                raise PetError(f"version name {name!r} is a number, which reads as a version id: add a word")
        with self.store.transaction() as c:
            self._check(c, int(version_id))
            if name is not None:
                other = c.execute("SELECT id FROM dataset_versions WHERE dataset=? AND name=? AND id<>?",
                                  (self.dataset, name, int(version_id))).fetchone()
                if other:
                    raise PetError(f"the name {name!r} is already version {other[0]}: choose another name")
            c.execute("UPDATE dataset_versions SET name=? WHERE id=?", (name, int(version_id)))

    def find(self, ref: str | int) -> int:
        """A version id from its number or its name."""
        s = str(ref).strip()
        if s.isdigit():
            return int(s)
        row = self.store.query("SELECT id FROM dataset_versions WHERE dataset=? AND name=?", (self.dataset, s))
        if not row:
            raise PetError(f"no version named {s!r}; see `python -m pet data versions`")
        return row[0][0]

    # --- internals ---

    @staticmethod
    def _valid(examples: list[dict]) -> list[dict]:
        problems = validate_examples(examples)
        if problems:
            raise DatasetError(problems)
        return [normalise(e) for e in examples]

    def _shas(self, c, version_id: int) -> list[str]:
        return [r[0] for r in c.execute("SELECT sha FROM dataset_rows WHERE version=? ORDER BY pos", (version_id,))]

    def _put(self, c, examples: list[dict]) -> Iterator[str]:
        pairs = [_body(e) for e in examples]
        c.executemany("INSERT OR IGNORE INTO dataset_examples(sha, body) VALUES (?, ?)", pairs)
        return (sha for sha, _ in pairs)

    def _row_params(self, version: int, shas: list[str]) -> Iterator[tuple[int, int, str]]:
        for pos, sha in enumerate(shas):
            yield version, pos, sha

    def _write(self, c, parent: int, shas: list[str], note: str) -> int:
        bodies = {}
        for sha in set(shas):
            bodies[sha] = c.execute("SELECT body FROM dataset_examples WHERE sha=?", (sha,)).fetchone()[0]
        digest = examples_sha256([json.loads(bodies[s]) for s in shas])
        cur = c.execute("INSERT INTO dataset_versions(dataset, parent, created, note, n, sha256) VALUES "
                        "(?, ?, ?, ?, ?, ?)", (self.dataset, parent or None, time.time(), note, len(shas), digest))
        version = cur.lastrowid
        c.executemany("INSERT INTO dataset_rows(version, pos, sha) VALUES (?, ?, ?)", self._row_params(version, shas))
        return version

    def _seed(self) -> None:
        """On first use, version 1 is the shipped examples (or empty if the file is absent)."""
        if self._seeded:
            return
        c = self.store.conn()
        if not self._latest(c):
            examples, note = [], "empty dataset (no seed file)"
            if self.seed_path.is_file():
                res = parse_file(self.seed_path)
                if res.errors:
                    raise DatasetError(res.errors, f"seed file {self.seed_path}")
                examples, note = res.examples, f"seeded from {self.seed_path.name}"
            with self.store.transaction() as c:
                if not self._latest(c):  # another process may have seeded meanwhile
                    self._write(c, 0, list(self._put(c, examples)), note)
        self._seeded = True
