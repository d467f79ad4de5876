"""SQLite store (stdlib sqlite3) under PET_HOME: dataset versions, runs, battles and votes.

Each feature module owns its tables and declares them with `Store.ensure(DDL)`; the store
owns the connection rules: one connection per thread, WAL, foreign keys, and writes inside
`transaction()` so a crash or a kill leaves either the old state or the new one, nothing between.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pet import PetError


class StoreError(PetError):
    """A write the disk refused (full, read-only, failing): the transaction was rolled back."""


def explain(err: sqlite3.Error, path: Path) -> PetError | None:
    """A message a user can act on for a write SQLite could not make, or None for a bug (re-raised as is)."""
    name = getattr(err, "sqlite_errorname", "") or ""
    text = str(err).lower()
    if name.startswith("SQLITE_FULL") or "disk is full" in text:
        why = f"the disk holding {path.parent} is full"
        fix = "free some space (or point PET_HOME at a bigger disk) and try again"
    elif name.startswith(("SQLITE_IOERR", "SQLITE_READONLY", "SQLITE_CANTOPEN")) or "disk i/o" in text \
            or "readonly" in text:
        why = f"{path} could not be written ({err})"
        fix = "check that the disk has space and PET_HOME is writable, then try again"
    else:
        return None
    return StoreError(f"not saved: {why}. Nothing was changed: what was saved before is intact; {fix}")


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._schemas: set[str] = set()
        self._lock = threading.Lock()

    def conn(self) -> sqlite3.Connection:
        c = getattr(self._local, "conn", None)
        if c is None:
            c = sqlite3.connect(self.path, timeout=30, isolation_level=None)  # autocommit; we BEGIN ourselves
            c.row_factory = sqlite3.Row
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("PRAGMA foreign_keys=ON")
            c.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = c
        return c

    def ensure(self, ddl: str) -> None:
        """Create tables/indexes once per process (DDL must use IF NOT EXISTS)."""
        if ddl in self._schemas:
            return
        with self._lock:
            if ddl not in self._schemas:
                self.conn().executescript(ddl)
                self._schemas.add(ddl)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT; any failure rolls back, and a full or failing disk becomes a StoreError."""
        c = self.conn()
        c.execute("BEGIN IMMEDIATE")
        try:
            yield c
            c.execute("COMMIT")
        except BaseException as e:
            if c.in_transaction:  # SQLite may already have rolled back after an I/O error
                c.execute("ROLLBACK")
            mapped = explain(e, self.path) if isinstance(e, sqlite3.Error) else None
            if mapped is not None:
                raise mapped from None
            raise

    def query(self, sql: str, args: tuple | dict = ()) -> list[sqlite3.Row]:
        return self.conn().execute(sql, args).fetchall()

    def close(self) -> None:
        c = getattr(self._local, "conn", None)
        if c is not None:
            c.close()
            self._local.conn = None
