"""Blind battles between tiers, votes, and Bradley-Terry ratings with bootstrap intervals.

A battle is one prompt answered by two tiers shown as "Model A" (left) and "Model B" (right);
a vote says which answer is better (a, b, tie, bothbad). Ratings come from all votes at once
(a maximum-likelihood Bradley-Terry fit), never from vote order: online Elo is offered only as a
secondary view because it changes when the same votes arrive in another order.

Scale: rating = 1000 + 400*log10(strength), strengths normalised so their log-mean is 0, so
a 400-point gap means 10:1 odds. A small Gaussian ridge on the log-strengths keeps a handful of
one-sided votes finite (without it, 3 wins and no losses push a rating to infinity).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pet import PetError
from pet.files import write_atomic

WINNERS = ("a", "b", "tie", "bothbad")  # verdicts: what a human can vote and what ratings count
UNPARSED = "unparsed"  # a judge reply that could not be read: stored so it is not asked again, never rated
EXPORT_WINNER = {"a": "model_a", "b": "model_b", "tie": "tie", "bothbad": "tie (bothbad)"}
IMPORT_WINNER = {v: k for k, v in EXPORT_WINNER.items()}
SCALE = 400 / math.log(10)  # natural-log strength -> rating points
BASE = 1000.0
RIDGE = 0.05  # prior precision on log-strengths: N(0, 1/0.05), i.e. sd ~4.5 nats (~1900 points)
DEFAULT_ROUNDS = 1000
# Below this many battles a model's bootstrap interval says nothing: after one vote every resample is
# that same vote, and the interval has zero width ("1230 - 1230").
MIN_BATTLES = 5

SCHEMA = """
CREATE TABLE IF NOT EXISTS arena_battles (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    tier_a TEXT NOT NULL,            -- shown on the left, as "Model A"
    tier_b TEXT NOT NULL,            -- shown on the right, as "Model B"
    prompt TEXT NOT NULL,
    system TEXT,                     -- the system prompt override; NULL = each tier's own
    params TEXT NOT NULL,            -- JSON: the shared generation settings
    seed INTEGER,
    answer_a TEXT NOT NULL,
    answer_b TEXT NOT NULL,
    ident_a TEXT NOT NULL,           -- JSON: backend, model, adapter, template, system prompt of tier_a
    ident_b TEXT NOT NULL,
    stats_a TEXT NOT NULL,           -- JSON: tokens, ttft_s, tok_s, total_s
    stats_b TEXT NOT NULL,
    session TEXT
);
CREATE TABLE IF NOT EXISTS arena_votes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    battle_id TEXT NOT NULL REFERENCES arena_battles(id) ON DELETE CASCADE,
    winner TEXT NOT NULL CHECK (winner IN ('a', 'b', 'tie', 'bothbad', 'unparsed')),
    voter TEXT NOT NULL CHECK (voter IN ('human', 'judge')),
    judge TEXT NOT NULL DEFAULT '',  -- the judging tier for voter = 'judge'
    session TEXT,
    created REAL NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    UNIQUE (battle_id, voter, judge)
);
CREATE INDEX IF NOT EXISTS arena_votes_battle ON arena_votes (battle_id);
"""


# -- drawing battles ------------------------------------------------------------------------------

def draw_pair(tiers: list[str], rng: random.Random | None = None) -> tuple[str, str]:
    """Two distinct tiers at random, in random sides: (left = Model A, right = Model B)."""
    pool = list(dict.fromkeys(tiers))
    if len(pool) < 2:
        have = f"only {pool[0]!r} is" if pool else "no tier is"
        raise PetError(f"a battle needs two available tiers, but {have} available: "
                       "fix or add a tier in the tiers file (see the Chat tab's tier status)")
    rng = rng or random.Random()
    left, right = rng.sample(pool, 2)  # sample() draws an ordered pair: sides are random too
    return left, right


def draw_next(res: dict, tiers: list[str], rng: random.Random | None = None) -> tuple[str, str]:
    """The next battle's pair: the one the leaderboard recommends (ratings()["next_pair"]), on random sides,
    so the pair it names is the pair that gets judged; two random tiers when it recommends none."""
    nxt = res.get("next_pair") or {}
    pair = [nxt.get("tier_a"), nxt.get("tier_b")]
    if pair[0] != pair[1] and all(t in tiers for t in pair):
        return draw_pair(pair, rng)
    return draw_pair(tiers, rng)


def new_battle_id() -> str:
    return uuid.uuid4().hex


def identity(engine, tier: str) -> dict:
    """What a vote records about a tier: the model, adapter (with its weights' hash) and prompt it ran with."""
    spec = engine.tiers.spec(tier)
    ident = {"tier": tier, "backend": spec.backend, "model": spec.model, "adapter": spec.adapter,
             "template": spec.template, "system_prompt": spec.system_prompt}
    if spec.adapter:
        ident["adapter_sha256"] = adapter_sha256(spec.adapter)
        try:
            from pet.adapters import read_adapter

            info = read_adapter(spec.adapter)
            ident["adapter_meta"] = {"label": info.label, "base": info.base}
        except PetError as e:
            ident["adapter_meta"] = {"error": str(e)}
    return ident


def adapter_sha256(folder: str | Path) -> str | None:
    """SHA-256 of an adapter's weights (the PEFT file, else the GGUF), or None when neither is there."""
    from pet.adapters import GGUF_FILE, file_sha256

    for name in ("adapter_model.safetensors", GGUF_FILE):
        f = Path(folder) / name
        if f.is_file():
            return file_sha256(f)
    return None


def model_key(tier: str, ident: dict | None) -> str:
    """What a rating belongs to: the tier name plus what it ran (model, adapter weights).

    "Make this the enhanced tier" keeps the name but changes the model: its votes must not pool with the
    old adapter's. Votes recorded before identities carried the adapter's hash get it from the adapter
    folder when it is still there, so the same weights give the same key either way."""
    ident = ident or {}
    if not ident.get("model") and not ident.get("adapter"):
        return tier  # a battles file or an old vote without an identity: the name is all there is
    adapter = ident.get("adapter") or ""
    weights = ident.get("adapter_sha256") or (adapter and adapter_sha256(adapter)) or adapter
    digest = hashlib.sha256(json.dumps([ident.get("model") or "", weights]).encode("utf-8")).hexdigest()
    return f"{tier}@{digest[:8]}"


def describe(ident: dict | None) -> str:
    """A short human name for what a tier ran: its adapter's label, or its model."""
    ident = ident or {}
    if ident.get("adapter"):
        label = (ident.get("adapter_meta") or {}).get("label")
        if not label:
            p = Path(ident["adapter"])
            label = p.parent.name if p.name == "adapter" else p.name  # runs/<run_id>/adapter -> the run id
        return f"adapter {label}"
    model = ident.get("model") or ""
    return f"{model.rsplit('/', 1)[-1]}, no adapter" if model else "no adapter"


# -- storing votes --------------------------------------------------------------------------------

_migrated: set[str] = set()


def _ensure(store) -> None:
    store.ensure(SCHEMA)
    key = str(store.path)
    if key not in _migrated:
        _allow_unparsed(store)
        _migrated.add(key)


def _allow_unparsed(store) -> None:
    """Databases made before 'unparsed' existed have a CHECK that refuses it; SQLite cannot alter a CHECK,
    so the votes table is rebuilt once, in one transaction, with every vote kept."""
    row = store.query("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'arena_votes'")
    if not row or "'unparsed'" in row[0][0]:
        return
    ddl = SCHEMA[SCHEMA.index("CREATE TABLE IF NOT EXISTS arena_votes"):SCHEMA.index("CREATE INDEX")]
    cols = "id, battle_id, winner, voter, judge, session, created, note"
    with store.transaction() as c:
        if "'unparsed'" in c.execute("SELECT sql FROM sqlite_master WHERE name = 'arena_votes'").fetchone()[0]:
            return  # another process migrated it meanwhile
        c.execute(ddl.replace("arena_votes", "arena_votes_new", 1).strip().rstrip(";"))
        c.execute(f"INSERT INTO arena_votes_new ({cols}) SELECT {cols} FROM arena_votes")
        c.execute("DROP TABLE arena_votes")
        c.execute("ALTER TABLE arena_votes_new RENAME TO arena_votes")
        c.execute("CREATE INDEX IF NOT EXISTS arena_votes_battle ON arena_votes (battle_id)")


def save_battle(store, battle: dict) -> str:
    """Insert a finished battle (both answers complete) once; returns its id."""
    _ensure(store)
    with store.transaction() as c:
        _insert_battle(c, battle)
    return battle["id"]


def _insert_battle(c, battle: dict) -> None:
    need = ("id", "tier_a", "tier_b", "prompt", "answer_a", "answer_b")
    missing = [k for k in need if not battle.get(k) and battle.get(k) != ""]
    if missing:
        raise PetError(f"battle is missing {', '.join(missing)}")
    c.execute(
        "INSERT OR IGNORE INTO arena_battles (id, created, tier_a, tier_b, prompt, system, params, seed,"
        " answer_a, answer_b, ident_a, ident_b, stats_a, stats_b, session)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (battle["id"], battle.get("created") or time.time(), battle["tier_a"], battle["tier_b"],
         battle["prompt"], battle.get("system"), json.dumps(battle.get("params") or {}),
         battle.get("seed"), battle["answer_a"], battle["answer_b"],
         json.dumps(battle.get("ident_a") or {}), json.dumps(battle.get("ident_b") or {}),
         json.dumps(battle.get("stats_a") or {}), json.dumps(battle.get("stats_b") or {}),
         battle.get("session")))


def record_vote(store, battle: dict, winner: str, session: str | None = None, voter: str = "human",
                judge: str = "", note: str = "") -> None:
    """Store a vote; voting again on the same battle (same voter/judge) replaces the earlier vote.

    A judge whose reply could not be read stores winner 'unparsed': kept (so it is not asked again and its
    reply can be looked at) but left out of every rating and export."""
    if winner not in WINNERS and not (winner == UNPARSED and voter == "judge"):
        raise PetError(f"winner must be one of {', '.join(WINNERS)}, got {winner!r}")
    if voter not in ("human", "judge") or (voter == "judge") != bool(judge):
        raise PetError("a judge vote names its judge tier; a human vote names none")
    _ensure(store)
    with store.transaction() as c:  # the battle and its vote in one transaction: a kill leaves both or neither
        _insert_battle(c, battle)
        c.execute("INSERT INTO arena_votes (battle_id, winner, voter, judge, session, created, note)"
                  " VALUES (?,?,?,?,?,?,?) ON CONFLICT (battle_id, voter, judge) DO UPDATE SET"
                  " winner = excluded.winner, session = excluded.session, created = excluded.created,"
                  " note = excluded.note",
                  (battle["id"], winner, voter, judge, session, time.time(), note))


def _row(r) -> dict:
    d = dict(r)
    for k in ("params", "ident_a", "ident_b", "stats_a", "stats_b"):
        if k in d and isinstance(d[k], str):
            d[k] = json.loads(d[k])
    return d


def get_battle(store, battle_id: str) -> dict:
    _ensure(store)
    rows = store.query("SELECT * FROM arena_battles WHERE id = ?", (battle_id,))
    if not rows:
        raise PetError(f"no battle with id {battle_id!r}")
    return _row(rows[0])


def votes(store, voter: str | None = None) -> list[dict]:
    """Every vote joined with its battle, oldest first. voter: None (all), 'human' or 'judge'."""
    _ensure(store)
    sql = ("SELECT v.id AS vote_id, v.winner, v.voter, v.judge, v.session AS voter_session, v.created AS voted,"
           " v.note, b.* FROM arena_votes v JOIN arena_battles b ON b.id = v.battle_id")
    args: tuple = ()
    if voter:
        sql += " WHERE v.voter = ?"
        args = (voter,)
    rows = [_row(r) for r in store.query(sql + " ORDER BY v.created, v.id", args)]
    for r in rows:
        for side in ("a", "b"):
            r[f"key_{side}"] = model_key(r[f"tier_{side}"], r.get(f"ident_{side}"))
    return rows


# -- Bradley-Terry ---------------------------------------------------------------------------------

@dataclass
class Battles:
    """Votes as arrays: index of the left tier, of the right tier, and the left tier's score."""

    names: list[str]
    left: np.ndarray
    right: np.ndarray
    score: np.ndarray  # 1 = left won, 0 = right won, 0.5 = tie or both bad
    tstamp: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @classmethod
    def from_votes(cls, rows: Iterable[dict]) -> Battles:
        rows = list(rows)
        names = sorted({_key(r, "a") for r in rows} | {_key(r, "b") for r in rows})
        ix = {n: i for i, n in enumerate(names)}
        score = {"a": 1.0, "b": 0.0, "tie": 0.5, "bothbad": 0.5}
        return cls(names,
                   np.array([ix[_key(r, "a")] for r in rows], dtype=np.int64),
                   np.array([ix[_key(r, "b")] for r in rows], dtype=np.int64),
                   np.array([score[r["winner"]] for r in rows], dtype=float),
                   np.array([float(r.get("voted") or r.get("created") or 0) for r in rows]))


def _key(row: dict, side: str) -> str:
    """The rated identity of one side of a vote (see model_key); rows without one are rated by tier name."""
    return row.get(f"key_{side}") or row[f"tier_{side}"]


def _cells(b: Battles):
    """Aggregate votes into cells (unordered pair, outcome) so a fit costs O(pairs), not O(votes).

    Returns the pair incidence matrix M (P x n: +1 for the lower index, -1 for the higher), and per cell
    its pair, its score for the lower-index tier, and its vote count; plus each vote's cell.
    """
    n = len(b.names)
    lo, hi = np.minimum(b.left, b.right), np.maximum(b.left, b.right)
    s_lo = np.where(b.left < b.right, b.score, 1.0 - b.score)
    key = (lo * n + hi) * 3 + np.rint(s_lo * 2).astype(np.int64)
    cell_keys, vote_cell, counts = np.unique(key, return_inverse=True, return_counts=True)
    pair_keys, cell_pair = np.unique(cell_keys // 3, return_inverse=True)
    M = np.zeros((len(pair_keys), n))
    M[np.arange(len(pair_keys)), pair_keys // n] = 1.0
    M[np.arange(len(pair_keys)), pair_keys % n] = -1.0
    cell_score = (cell_keys % 3) / 2.0
    return M, cell_pair, cell_score, counts.astype(float), vote_cell.ravel()


def _newton(games: np.ndarray, wins: np.ndarray, M: np.ndarray, ridge: float, theta: np.ndarray,
            iters: int = 100, tol: float = 1e-10) -> np.ndarray:
    """Maximise the ridge-penalised BT log-likelihood for a batch of count sets at once.

    games, wins: (B, P) games per pair and the lower-index tier's score in them; theta: (B, n) start.
    The objective is strictly concave (ridge > 0), so damped Newton converges from any start;
    the step is capped at 2 nats per iteration so a far start cannot overshoot.
    """
    n = M.shape[1]
    eye = np.eye(n) * ridge
    for _ in range(iters):
        d = theta @ M.T
        p = 1.0 / (1.0 + np.exp(-d))
        grad = (wins - games * p) @ M - ridge * theta
        w = games * p * (1.0 - p)
        hess = np.einsum("bp,pi,pj->bij", w, M, M) + eye
        step = np.linalg.solve(hess, grad[..., None])[..., 0]
        big = np.abs(step).max(axis=1, keepdims=True)
        theta = theta + step * np.minimum(1.0, 2.0 / np.maximum(big, 1e-300))
        if big.max() < tol:
            break
    return theta


def bradley_terry(b: Battles, ridge: float = RIDGE) -> np.ndarray:
    """Log-strengths (natural log, mean 0) maximising the penalised likelihood of all votes at once.

    A tie (or both bad) counts as half a win each way. The ridge keeps the log-mean at 0 too:
    the likelihood's gradient sums to zero over tiers, so at the optimum ridge * sum(theta) = 0.
    """
    n = len(b.names)
    if n == 0:
        return np.zeros(0)
    M, cell_pair, cell_score, counts, _ = _cells(b)
    A = np.zeros((len(counts), M.shape[0]))
    A[np.arange(len(counts)), cell_pair] = 1.0
    games, wins = (counts @ A)[None], ((counts * cell_score) @ A)[None]
    return _newton(games, wins, M, ridge, np.zeros((1, n)))[0]


def to_rating(theta: np.ndarray) -> np.ndarray:
    return BASE + SCALE * theta


def bootstrap(b: Battles, rounds: int = DEFAULT_ROUNDS, ridge: float = RIDGE,
              rng: np.random.Generator | None = None, theta0: np.ndarray | None = None) -> np.ndarray:
    """Ratings refitted on `rounds` resamples of the votes (rows: rounds, columns: tiers).

    Resampling N vote indices with replacement and counting them per cell is the same as one
    multinomial draw over the cells with probabilities count/N: we draw that directly, which is
    exact and far cheaper than materialising the indices. Each refit starts from the full fit.
    """
    rng = rng or np.random.default_rng()
    n = len(b.names)
    if n == 0 or rounds <= 0:
        return np.zeros((0, n))
    M, cell_pair, cell_score, counts, _ = _cells(b)
    total = int(counts.sum())
    draws = rng.multinomial(total, counts / total, size=rounds).astype(float)
    A = np.zeros((len(counts), M.shape[0]))
    A[np.arange(len(counts)), cell_pair] = 1.0
    games, wins = draws @ A, (draws * cell_score) @ A
    start = bradley_terry(b, ridge) if theta0 is None else theta0
    theta = _newton(games, wins, M, ridge, np.tile(start, (rounds, 1)))
    return to_rating(theta)


def online_elo(b: Battles, k: float = 4.0) -> np.ndarray:
    """Sequential Elo in vote order: a secondary view only, since it depends on that order."""
    r = np.full(len(b.names), BASE)
    order = np.argsort(b.tstamp, kind="stable")
    for i, j, s in zip(b.left[order], b.right[order], b.score[order]):
        e = 1.0 / (1.0 + 10 ** ((r[j] - r[i]) / 400))
        r[i] += k * (s - e)
        r[j] -= k * (s - e)
    return r


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for k successes in n trials."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def _pair_counts(b: Battles) -> tuple[np.ndarray, np.ndarray]:
    """(games, score): battles between each pair of models, and the points the row's model took in them."""
    n = len(b.names)
    games = np.zeros((n, n))
    score = np.zeros((n, n))
    np.add.at(games, (b.left, b.right), 1)
    np.add.at(games, (b.right, b.left), 1)
    np.add.at(score, (b.left, b.right), b.score)
    np.add.at(score, (b.right, b.left), 1 - b.score)
    return games, score


def _position_bias(b: Battles) -> dict:
    """How often the left answer won the decisive votes, with a Wilson interval (0.5 = no bias)."""
    decisive = b.score != 0.5
    left_wins = int((b.score[decisive] == 1).sum())
    n_dec = int(decisive.sum())
    lo, hi = wilson(left_wins, n_dec)
    return {"left_wins": left_wins, "decisive": n_dec, "rate": round(left_wins / n_dec, 4) if n_dec else None,
            "ci_low": round(lo, 4), "ci_high": round(hi, 4)}


def ratings(rows: Iterable[dict], rounds: int = DEFAULT_ROUNDS, ridge: float = RIDGE,
            seed: int | None = 0, tiers: Iterable[str] = (), current: dict[str, str] | None = None) -> dict:
    """The leaderboard from votes (dicts with tier_a, tier_b, winner; optional voted/created time, key_a/key_b).

    Ratings belong to model identities (model_key: the tier name plus what it ran), so a tier whose
    adapter was swapped is rated apart from its earlier model. Each table row has the `tier` name, the
    identity (`model`), a display `label` that says when a tier's model changed, and `current` (whether
    it is what the tier runs now). `current` maps tier -> its identity now; a tier left out counts the
    identity of its latest vote as current.
    `tiers`: tiers that could battle (the available ones); a pair of them never judged is the first
    suggestion for the next battle. Returns plain data (JSON-serialisable).
    """
    if rounds < 0:
        raise PetError(f"rounds must be >= 0, got {rounds}")
    rows = one_vote_per_battle(rows)
    b = Battles.from_votes(rows)
    n = len(b.names)
    tier_of, desc_of, now = _identities(rows, current)
    theta = bradley_terry(b, ridge)
    rating = to_rating(theta)
    boot = bootstrap(b, rounds, ridge, np.random.default_rng(seed), theta) if rounds else np.zeros((0, n))
    if len(boot):
        lo, hi = np.percentile(boot, [2.5, 97.5], axis=0)
    else:
        lo, hi = rating.copy(), rating.copy()
    games, score = _pair_counts(b)
    table = _table_rows(b, rating, lo, hi, tier_of, desc_of, now)
    order = sorted(range(n), key=lambda i: -rating[i])
    labels = [table[i]["label"] for i in order]
    table = [table[i] for i in order]
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(games > 0, score / np.maximum(games, 1), np.nan)
    elo = online_elo(b)
    cands = [now.get(t, t) for t in dict.fromkeys(tiers)]  # the tiers' current identities
    nxt = next_pair(b.names, boot, rating, games, cands)
    if nxt:
        tier_now = {k: t for t, k in now.items()}
        for side in ("a", "b"):
            k = nxt[f"tier_{side}"]
            nxt[f"model_{side}"], nxt[f"tier_{side}"] = k, tier_of.get(k) or tier_now.get(k, k)
    return {
        "votes": len(rows), "rounds": int(rounds), "ridge": ridge, "table": table,
        "winrate": {"tiers": labels,
                    "matrix": [[None if np.isnan(rate[i, j]) else round(float(rate[i, j]), 4) for j in order]
                               for i in order],
                    "games": [[int(games[i, j]) for j in order] for i in order]},
        "position_bias": _position_bias(b),
        "next_pair": nxt,
        "elo": {b.names[i]: round(float(elo[i]), 1) for i in order},
    }


def _identities(rows: list[dict], current: dict[str, str] | None) -> tuple[dict, dict, dict]:
    """From the votes (oldest first): each identity's tier and description, and each tier's identity now."""
    tier_of, desc_of, now = {}, {}, {}
    for r in rows:  # oldest first: the last identity seen for a tier is its latest
        for side in ("a", "b"):
            k = _key(r, side)
            tier_of[k], desc_of[k] = r[f"tier_{side}"], describe(r.get(f"ident_{side}"))
            now[r[f"tier_{side}"]] = k
    # A tier rated only by name (votes from a battles file, without identities) cannot be told from its
    # current model: keep its name rather than calling it replaced.
    by_name = {t for t in now if all(k == t for k, tt in tier_of.items() if tt == t)}
    now.update({t: k for t, k in (current or {}).items() if t not in by_name})
    return tier_of, desc_of, now


def _table_rows(b: Battles, rating, lo, hi, tier_of: dict, desc_of: dict, now: dict) -> list[dict]:
    """One leaderboard row per identity, in b.names order, ranked by interval overlap."""
    per_tier = {t: sum(1 for k in b.names if tier_of[k] == t) for t in set(tier_of.values())}
    table = []
    for i, name in enumerate(b.names):
        mine = (b.left == i) | (b.right == i)
        s_i = np.where(b.left == i, b.score, 1 - b.score)[mine]
        tier = tier_of[name]
        is_now = now.get(tier) == name
        label = tier if per_tier[tier] == 1 and is_now else \
            f"{tier} ({desc_of[name]}, {'current' if is_now else 'replaced'})"
        table.append({"tier": tier, "model": name, "label": label, "current": is_now,
                      "rating": round(float(rating[i]), 1), "ci_low": round(float(lo[i]), 1),
                      "ci_high": round(float(hi[i]), 1), "battles": int(mine.sum()),
                      "wins": int((s_i == 1).sum()), "losses": int((s_i == 0).sum()),
                      "ties": int((s_i == 0.5).sum())})
        # An interval means something once there are a few battles and the resamples disagree at all.
        table[-1]["enough_votes"] = bool(table[-1]["battles"] >= MIN_BATTLES and hi[i] - lo[i] > 0.05)
    # Rank from interval overlap: 1 + the number of tiers whose whole interval lies above this one's.
    for row in table:
        row["rank"] = 1 + sum(1 for o in table if o["ci_low"] > row["ci_high"])
    return table


def one_vote_per_battle(rows: Iterable[dict]) -> list[dict]:
    """The votes a rating counts: unreadable judge replies dropped, and one vote per battle.

    A battle a human voted on counts the human's vote only, however many judges also judged it; a battle
    only judges voted on counts once, with their common verdict (a tie when they disagree). Rows without
    a battle id (a battles file without battle_id) are each their own battle."""
    rated = [r for r in rows if r.get("winner") in WINNERS]
    out: list[dict] = []
    judged: dict[str, list[dict]] = {}
    humans = {r["id"] for r in rated if r.get("id") and r.get("voter", "human") == "human"}
    for r in rated:
        bid = r.get("id")
        if not bid or r.get("voter", "human") == "human":
            out.append(r)
        elif bid not in humans:
            judged.setdefault(bid, []).append(r)
    for group in judged.values():
        verdicts = {0.5 if r["winner"] in ("tie", "bothbad") else r["winner"] for r in group}
        out.append(dict(group[-1], winner=group[-1]["winner"] if len(verdicts) == 1 else "tie"))
    return sorted(out, key=lambda r: float(r.get("voted") or r.get("created") or 0))


def next_pair(names: list[str], boot: np.ndarray, rating: np.ndarray, games: np.ndarray,
              tiers: Iterable[str] = ()) -> dict | None:
    """The pair whose ordering is least certain: P(i above j) over the bootstrap closest to 1/2.

    A pair of candidate tiers that has never met comes first (nothing is known about it); ties on
    certainty go to the pair with fewer battles.
    """
    cands = list(dict.fromkeys(list(tiers) or names))
    ix = {n: i for i, n in enumerate(names)}
    best = None
    for x in range(len(cands)):
        for y in range(x + 1, len(cands)):
            a, c = cands[x], cands[y]
            if a not in ix or c not in ix or games[ix[a], ix[c]] == 0:
                key, p = (-1.0, 0), None
            else:
                i, j = ix[a], ix[c]
                p = float((boot[:, i] > boot[:, j]).mean()) if len(boot) else float(rating[i] > rating[j])
                key = (abs(p - 0.5), int(games[i, j]))
            if best is None or key < best[0]:
                best = (key, a, c, p)
    if best is None:
        return None
    _, a, c, p = best
    return {"tier_a": a, "tier_b": c, "p_a_above": None if p is None else round(p, 4),
            "battles": int(games[ix[a], ix[c]]) if a in ix and c in ix else 0}


def judge_agreement(rows: Iterable[dict]) -> list[dict]:
    """Per judge: on battles a human also voted on, how often the judge's verdict matches the human's.

    Both bad and tie count as the same verdict (neither answer is better)."""
    rows = list(rows)
    human = {r["id"]: r["winner"] for r in rows if r["voter"] == "human"}
    norm = {"a": "a", "b": "b", "tie": "tie", "bothbad": "tie"}
    out: dict[str, list[int]] = {}
    for r in rows:
        if r["voter"] == "judge":
            stat = out.setdefault(r["judge"], [0, 0, 0, 0])
            if r["winner"] == UNPARSED:  # no verdict: neither agrees nor disagrees
                stat[3] += 1
                continue
            stat[2] += 1
            if r["id"] in human:
                stat[1] += 1
                stat[0] += norm[human[r["id"]]] == norm[r["winner"]]
    return [{"judge": j, "votes": v, "shared": n, "agree": k, "agreement": round(k / n, 4) if n else None,
             "unparsed": u} for j, (k, n, v, u) in sorted(out.items())]


# -- auto-judge ------------------------------------------------------------------------------------

JUDGE_SYSTEM = ("You are a strict judge of prompt improvements. A user asked an assistant to turn a rough "
                "request into a well-built prompt (role, task, context, constraints, reasoning steps, "
                "examples, output format). Compare the two answers and reply with exactly one of: "
                "A, B, or tie.")


def judge_messages(prompt: str, first: str, second: str) -> list[dict]:
    return [{"role": "user", "content":
             f"Request:\n<<<\n{prompt}\n>>>\n\nAnswer A:\n<<<\n{first}\n>>>\n\nAnswer B:\n<<<\n{second}\n>>>\n\n"
             "Which answer is the better prompt improvement? Reply with A, B or tie."}]


# Keywords match in any case, the letters only as capitals: "the answer is a good start" is no verdict.
_AB = r"(?-i:(A|B))(?![\w'])"
_VERDICT_PATTERNS = [
    re.compile(r"\[\[\s*(A|B|TIE|C)\s*\]\]", re.I),
    re.compile(r"\b(?:verdict|winner|better|choice|final answer)\s*(?:is|:|=|-)?\s*(?:answer\s*)?\**\s*\(?"
               + _AB, re.I),
    re.compile(r"\b(?:answer|option|response)\s+" + _AB + r"\s+is\s+(?:the\s+|clearly\s+)?better", re.I),
    re.compile(r"\bbetter\b[^.\n]{0,40}?\bis\s*:?\s*\**\(?(?:answer\s+)?" + _AB, re.I),
]
_TIE_WORDS = re.compile(r"\b(tie|equal(?:ly)?|same quality|both (?:are )?(?:good|bad|equal)|neither)\b", re.I)


def parse_verdict(text: str) -> tuple[str | None, str]:
    """A judge's reply -> ('a'|'b'|'tie', note) or (None, note) when it cannot be read."""
    t = text.strip()
    if not t:
        return None, "empty reply"
    bare = re.fullmatch(r"[\s\"'*(\[]*(A|B|tie)[\s\"'*)\].!:]*", t, re.I)
    if bare:
        return bare.group(1).lower(), ""
    for pat in _VERDICT_PATTERNS:
        m = pat.search(t)
        if m:
            v = m.group(1).lower()
            return ("tie" if v in ("tie", "c") else v), ""
    first = re.match(r"[\s\"'*(\[]*(A|B)\b(?![\w'])", t)
    if first and first.group(1) in "AB":  # a reply that opens with a capital A/B
        return first.group(1).lower(), ""
    if _TIE_WORDS.search(t):
        return "tie", ""
    return None, f"unparseable reply: {t[:80]!r}"


def combine_orders(first: str | None, swapped: str | None) -> str | None:
    """Verdicts from both orders -> the battle's verdict in the original order, or None (no verdict).

    `first` judged (A=answer_a, B=answer_b); `swapped` judged (A=answer_b, B=answer_a). The judge
    must pick the same answer both times; a disagreement (position bias) is a tie. An unreadable reply
    in either order is no verdict at all: counting it as a tie would pull ratings together.
    """
    back = {"a": "b", "b": "a", "tie": "tie", None: None}[swapped]
    if first is None or back is None:
        return None
    if first != back:
        return "tie"
    return first


def judge_battle(engine, battle_id: str, judge: str, max_new_tokens: int = 24) -> dict:
    """Have tier `judge` judge a stored battle in both orders; store and return its vote."""
    battle = get_battle(engine.store, battle_id)
    params = engine.params_for(judge, temperature=0.0, max_new_tokens=max_new_tokens, seed=0)
    replies, verdicts, notes = [], [], []
    for first, second in ((battle["answer_a"], battle["answer_b"]), (battle["answer_b"], battle["answer_a"])):
        text = engine.generate(judge, judge_messages(battle["prompt"], first, second), params,
                               system=JUDGE_SYSTEM).text
        v, note = parse_verdict(text)
        replies.append(text)
        verdicts.append(v)
        if note:
            notes.append(note)
    winner = combine_orders(*verdicts) or UNPARSED
    if verdicts[0] and verdicts[1] and winner == "tie" and not (verdicts[0] == verdicts[1] == "tie"):
        notes.append(f"orders disagree ({verdicts[0]} then {verdicts[1]} with sides swapped)")
    note = "; ".join(notes)
    record_vote(engine.store, battle, winner, voter="judge", judge=judge, note=note)
    return {"battle_id": battle_id, "judge": judge, "winner": winner, "verdicts": verdicts, "replies": replies,
            "note": note}


def unjudged(store, judge: str, limit: int = 10) -> list[str]:
    """Battles with a human vote that `judge` has not judged yet, newest first."""
    _ensure(store)
    rows = store.query(
        "SELECT DISTINCT b.id FROM arena_battles b JOIN arena_votes h ON h.battle_id = b.id AND h.voter = 'human'"
        " WHERE NOT EXISTS (SELECT 1 FROM arena_votes j WHERE j.battle_id = b.id AND j.voter = 'judge'"
        " AND j.judge = ?) ORDER BY b.created DESC LIMIT ?", (judge, limit))
    return [r["id"] for r in rows]


# -- export / import -----------------------------------------------------------------------------

def _conversation(system: str | None, prompt: str, answer: str) -> list[dict]:
    msgs = [{"role": "system", "content": system}] if system else []
    return msgs + [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]


def battle_record(v: dict) -> dict:
    """A vote in the arena battles format (model_a, model_b, winner, conversation_a/_b, tstamp)."""
    return {"model_a": _key(v, "a"), "model_b": _key(v, "b"), "tier_a": v["tier_a"], "tier_b": v["tier_b"],
            "winner": EXPORT_WINNER[v["winner"]],
            "conversation_a": _conversation(v.get("system"), v["prompt"], v["answer_a"]),
            "conversation_b": _conversation(v.get("system"), v["prompt"], v["answer_b"]),
            "tstamp": v.get("voted") or v.get("created"), "voter": v.get("voter", "human"),
            "judge": v.get("judge") or None, "battle_id": v.get("id")}


def preference_record(v: dict) -> dict | None:
    """A decisive vote as a conversational preference pair (TRL's prompt/chosen/rejected); else None."""
    if v["winner"] not in ("a", "b"):
        return None
    good, bad = ("answer_a", "answer_b") if v["winner"] == "a" else ("answer_b", "answer_a")
    prompt = _conversation(v.get("system"), v["prompt"], "")[:-1]
    return {"prompt": prompt, "chosen": [{"role": "assistant", "content": v[good]}],
            "rejected": [{"role": "assistant", "content": v[bad]}],
            "chosen_model": v["tier_a" if good == "answer_a" else "tier_b"],
            "rejected_model": v["tier_b" if good == "answer_a" else "tier_a"]}


def export(rows: Iterable[dict], fmt: str, out: str | Path) -> int:
    """Write votes as JSONL (atomically: a temp file then a rename). Returns the number of lines."""
    if fmt not in ("battles", "preferences"):
        raise PetError(f"format must be battles or preferences, got {fmt!r}")
    rows = [v for v in rows if v["winner"] in WINNERS]  # an unreadable judge reply is no verdict to export
    recs = [battle_record(v) if fmt == "battles" else preference_record(v) for v in rows]
    recs = [r for r in recs if r is not None]
    out = Path(out)
    if out.is_dir():
        raise PetError(f"{out} is a folder: give a file path such as {out / ('arena_' + fmt + '.jsonl')}")
    if not out.parent.exists():
        raise PetError(f"folder {out.parent} does not exist: create it or choose another --out")
    write_atomic(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs))
    return len(recs)


def read_battles(path: str | Path, include_judges: bool = False) -> list[dict]:
    """Arena battles JSONL -> vote rows for `ratings`. Every bad line is reported at once, by number."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise PetError(f"cannot read votes file {path}: {getattr(e, 'strerror', None) or e}")
    rows, problems = [], []
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            from pet.dataset import json_error_text

            problems.append(f"line {no}: not valid JSON: {json_error_text(e, no)}")
            continue
        if not isinstance(rec, dict):
            problems.append(f"line {no}: expected a JSON object, got {type(rec).__name__}")
            continue
        bad = [k for k in ("model_a", "model_b") if not isinstance(rec.get(k), str) or not rec.get(k).strip()]
        if bad:
            problems.append(f"line {no}: {' and '.join(bad)} must be a non-empty string")
            continue
        if rec["model_a"] == rec["model_b"]:
            problems.append(f"line {no}: model_a and model_b are both {rec['model_a']!r}; a battle needs two models")
            continue
        if rec.get("winner") not in IMPORT_WINNER:
            problems.append(f"line {no}: winner must be one of {', '.join(IMPORT_WINNER)}, got {rec.get('winner')!r}")
            continue
        if rec.get("voter") == "judge" and not include_judges:
            continue
        ts = rec.get("tstamp")
        bid = rec.get("battle_id")
        # model_a/_b are the rated identities; tier_a/_b (PET's own exports) the tier names shown for them.
        tiers = [rec.get(f"tier_{x}") if isinstance(rec.get(f"tier_{x}"), str) else rec[f"model_{x}"] for x in "ab"]
        rows.append({"tier_a": tiers[0], "tier_b": tiers[1], "key_a": rec["model_a"], "key_b": rec["model_b"],
                     "winner": IMPORT_WINNER[rec["winner"]],
                     "voted": ts if isinstance(ts, (int, float)) else 0.0, "id": bid if isinstance(bid, str) else None,
                     "voter": "judge" if rec.get("voter") == "judge" else "human"})
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise PetError(f"{path}: {len(problems)} bad line(s) (expected arena battles JSONL with model_a, model_b, "
                       "winner):\n" + "\n".join(f"  - {p}" for p in shown))
    return rows


def better_example(v: dict) -> dict:
    """The better answer of a decisive vote as a training example {"messages": [user, assistant]}."""
    if v["winner"] not in ("a", "b"):
        raise PetError("only a vote for A or B has a better answer to keep; this one was a tie or both bad")
    answer = v["answer_a"] if v["winner"] == "a" else v["answer_b"]
    if not answer.strip():
        raise PetError("the better answer is empty; nothing to add to the training set")
    return {"messages": [{"role": "user", "content": v["prompt"]}, {"role": "assistant", "content": answer}]}


def send_to_training(store, battle_id: str) -> int:
    """Add the human-preferred answer of a battle to the dataset as a new version; returns that version."""
    from pet.datastore import DatasetStore

    _ensure(store)
    rows = [v for v in votes(store, "human") if v["id"] == battle_id]
    if not rows:
        raise PetError("vote on this battle first: the better answer is the one you voted for")
    ex = better_example(rows[0])
    winner = rows[0]["tier_a"] if rows[0]["winner"] == "a" else rows[0]["tier_b"]
    return DatasetStore(store).add([ex], f"arena: better answer ({winner}) from battle {battle_id[:8]}")


# -- prompt sets -----------------------------------------------------------------------------------

def heldout_prompts(store=None) -> tuple[list[str], str]:
    """The held-out examples' requests, and where they came from: the dataset store's current version,
    else (no store, or an unreadable seed file) the shipped data/pet_examples.jsonl."""
    from pet import dataset

    examples, source = None, ""
    if store is not None:
        from pet.datastore import DatasetStore

        try:
            version, examples = DatasetStore(store).current()
            source = f"dataset version {version}"
        except PetError:
            examples = None
    if not examples:
        examples, source = [], str(dataset.SHIPPED.name)
        if dataset.SHIPPED.exists():
            examples = dataset.read_jsonl(dataset.SHIPPED)
    _, held = dataset.split([e for e in examples if isinstance(e, dict)])
    prompts = list(dict.fromkeys(p for p in (dataset.first_user(e).strip() for e in held) if p))
    return prompts, source


def parse_prompt_list(text: str) -> list[str]:
    """A user's prompt set: one prompt per line; blank lines and duplicates dropped."""
    return list(dict.fromkeys(line.strip() for line in (text or "").splitlines() if line.strip()))


# -- one battle, as the Arena tab runs it ---------------------------------------------------------------

PROMPT_SOURCES = ("heldout", "list", "typed")


def pick_prompt(source: str, text: str, typed: str, store=None, rng: random.Random | None = None) -> str:
    """The prompt of a new battle: the one typed, or a random one from the user's list or the held-out examples."""
    rng = rng or random.Random()
    if source == "typed":
        if not (typed or "").strip():
            raise PetError("type a prompt first, or choose a prompt set")
        return typed.strip()
    if source == "list":
        prompts = parse_prompt_list(text)
        if not prompts:
            raise PetError("your list is empty: paste prompts, one per line")
    else:
        prompts, _ = heldout_prompts(store=store)
        if not prompts:
            raise PetError("no held-out examples found: paste your own prompts, or type one")
    return rng.choice(prompts)


def leaderboard(engine, voter: str, rounds: int = DEFAULT_ROUNDS) -> dict:
    """Ratings of one voter's votes, as the Arena shows them: the tiers that can run here, and which model
    identity each tier has now (a replaced adapter is marked)."""
    avail = [r["name"] for r in engine.tier_status() if r["available"]]
    current = {t: model_key(t, identity(engine, t)) for t in engine.tiers.names()}
    return ratings(votes(engine.store, voter), rounds=rounds, tiers=avail, current=current)


def new_battle(left: str, right: str, prompt: str, temperature: float, max_new_tokens: int, seed: int | None,
               session: str | None = None, rng: random.Random | None = None) -> dict:
    """A pending battle as plain data (it lives in the page's gr.State until the vote). No seed: a random one."""
    seed = int(seed) if seed not in (None, "") else (rng or random.Random()).randrange(2**31)
    params = {"temperature": float(temperature), "max_new_tokens": int(max_new_tokens), "seed": seed}
    return {"id": new_battle_id(), "tier_a": left, "tier_b": right, "prompt": prompt, "system": None,
            "params": params, "seed": seed, "session": session, "done": False, "voted": None}


def finish_battle(battle: dict, columns: list[dict]) -> dict:
    """Put both streamed columns (pet.compare.stream_columns) into the battle. It can be judged (done) only
    when both sides answered."""
    for side, c in zip("ab", columns):
        battle[f"answer_{side}"] = c["text"]
        battle[f"stats_{side}"] = c["stats"] or {}
        battle[f"ident_{side}"] = c["ident"]
    battle["created"] = time.time()
    battle["done"] = not any(c["error"] for c in columns)
    return battle
