"""Side-by-side comparison: one prompt on several tiers, streamed, timed, saved and reopenable.

Local tiers run one after another, not in threads: on a small CPU machine two models decoding at once
each run at about half speed, which would make the TTFT and tokens/s shown under each answer
say more about the neighbour than about the tier. A tier that cannot run shows its reason in its
own column; the others still answer.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

from pet import PetError
from pet.backends.base import Stats
from pet.config import ConfigError

SCHEMA = """
CREATE TABLE IF NOT EXISTS comparisons (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    prompt TEXT NOT NULL,
    system TEXT,              -- the system prompt override; NULL = each tier's own
    settings TEXT NOT NULL,   -- JSON: the shared generation settings (seed included)
    seed INTEGER,
    columns TEXT NOT NULL,    -- JSON list: tier, text, stats, error, ident, params
    session TEXT
);
CREATE INDEX IF NOT EXISTS comparisons_created ON comparisons (created);
"""

SETTING_KEYS = ("temperature", "top_p", "top_k", "max_new_tokens", "repeat_penalty", "seed")


def clean_settings(settings: dict | None) -> dict:
    """Keep the known generation settings that were given (None = the tier's own value)."""
    settings = settings or {}
    unknown = [k for k in settings if k not in SETTING_KEYS]
    if unknown:
        raise PetError(f"unknown generation setting(s) {', '.join(unknown)}; valid: {', '.join(SETTING_KEYS)}")
    return {k: v for k, v in settings.items() if v is not None}


def params_for(engine, tier: str, settings: dict):
    try:
        return engine.params_for(tier, **settings)
    except ConfigError as e:
        raise PetError(f"tier {tier}: " + "; ".join(p.removeprefix("params.") for p in e.problems)) from None


def stream_columns(engine, tiers: list[str], prompt: str, system: str | None = None,
                   settings: dict | None = None) -> Iterator[list[dict]]:
    """Yield the list of all columns after every chunk; each column is plain data:
    {tier, text, stats (dict or None), error, done, ident, params, notice}.

    Local tiers run one after another (see the module's note); tiers on model servers (ollama, openai)
    run at the same time as each other and as the local ones, since they load another machine or
    process: a slow cluster does not hold up the rest of the comparison."""
    from pet.arena import identity  # the same identity record a vote stores

    if not prompt or not prompt.strip():
        raise PetError("the prompt is empty: type a request to compare")
    tiers = list(dict.fromkeys(tiers))
    if not tiers:
        raise PetError("choose at least one tier to compare")
    settings = clean_settings(settings)
    names = engine.tiers.names()
    bad = [t for t in tiers if not engine.tiers.known(t)]
    if bad:
        raise PetError(f"unknown tier(s) {', '.join(bad)}; valid tiers: {', '.join(names)}")
    cols = [{"tier": t, "text": "", "stats": None, "error": "", "done": False, "ident": identity(engine, t),
             "params": None, "notice": ""} for t in tiers]
    messages = [{"role": "user", "content": prompt}]
    remote = [c for c in cols if engine.tiers.is_remote(c["tier"])]
    local = [c for c in cols if c not in remote]
    if not remote or len(cols) == 1:
        for col in cols:
            for _ in _run_column(engine, col, messages, system, settings):
                yield cols
        return
    yield from _concurrent(cols, [local] + [[c] for c in remote],
                           lambda col: _run_column(engine, col, messages, system, settings))


def _run_column(engine, col: dict, messages: list[dict], system: str | None, settings: dict) -> Iterator[None]:
    """Stream one tier into its column, yielding after every change."""
    tier = col["tier"]
    try:
        params = params_for(engine, tier, settings)
        col["params"] = params.as_dict()
        status = engine.tiers.status(tier)
        if not status["available"]:
            raise PetError(status["reason"] or "unavailable")
        st = Stats()
        for ch in engine.stream(tier, messages, params, system=system):
            col["text"] += ch.text
            col["stats"] = st.update(ch).as_dict()
            col["notice"] = ch.notice or col["notice"]  # e.g. a language the tier was not tuned on
            yield
    except PetError as e:
        col["error"] = str(e)
    except Exception as e:  # one broken tier must not take the others down
        col["error"] = f"unexpected {type(e).__name__}: {e}"
    col["done"] = True
    yield


def _concurrent(cols: list[dict], lanes: list[list[dict]], run) -> Iterator[list[dict]]:
    """Run each lane (a list of columns, streamed one after another) in its own thread; yield the
    columns whenever any of them changes. Closing this generator (Stop) closes every stream."""
    import queue
    import threading

    changed: queue.Queue = queue.Queue()
    stop = threading.Event()

    def lane(columns: list[dict]) -> None:
        try:
            for col in columns:
                gen = run(col)
                try:
                    for _ in gen:
                        changed.put(1)
                        if stop.is_set():
                            return
                finally:
                    gen.close()  # frees the tier (its lock, its connection) when Stop comes mid-answer
        finally:
            changed.put(None)

    threads = [threading.Thread(target=lane, args=(ln,), daemon=True, name="pet-compare") for ln in lanes if ln]
    for t in threads:
        t.start()
    running = len(threads)
    try:
        while running:
            if changed.get() is None:
                running -= 1
            yield cols
    finally:
        stop.set()
        for t in threads:
            t.join(2)  # a lane blocked on a slow server stops at its next chunk; no need to wait


def save(store, prompt: str, system: str | None, settings: dict, columns: list[dict],
         session: str | None = None) -> str:
    store.ensure(SCHEMA)
    cid = uuid.uuid4().hex
    with store.transaction() as c:
        c.execute("INSERT INTO comparisons (id, created, prompt, system, settings, seed, columns, session)"
                  " VALUES (?,?,?,?,?,?,?,?)",
                  (cid, time.time(), prompt, system, json.dumps(settings), settings.get("seed"),
                   json.dumps(columns, ensure_ascii=False), session))
    return cid


def run(engine, tiers: list[str], prompt: str, system: str | None = None, settings: dict | None = None,
        session: str | None = None) -> dict:
    """Run to the end and save; returns the saved comparison."""
    cols: list[dict] = []
    for cols in stream_columns(engine, tiers, prompt, system, settings):
        pass
    cid = save(engine.store, prompt, system, clean_settings(settings), cols, session)
    return load(engine.store, cid)


def saved(store, limit: int = 50) -> list[dict]:
    """Saved comparisons, newest first: id, created, prompt, tiers."""
    store.ensure(SCHEMA)
    rows = store.query("SELECT id, created, prompt, columns FROM comparisons ORDER BY created DESC LIMIT ?",
                       (limit,))
    return [{"id": r["id"], "created": r["created"], "prompt": r["prompt"],
             "tiers": [c["tier"] for c in json.loads(r["columns"])]} for r in rows]


def load(store, cid: str) -> dict:
    store.ensure(SCHEMA)
    rows = store.query("SELECT * FROM comparisons WHERE id = ?", (cid,))
    if not rows:
        raise PetError(f"no saved comparison with id {cid!r}")
    d = dict(rows[0])
    d["settings"] = json.loads(d["settings"])
    d["columns"] = json.loads(d["columns"])
    return d
