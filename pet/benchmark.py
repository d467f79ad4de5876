"""What each tier is worth: prompt quality and speed over a prompt set, with paired bootstrap intervals.

For each tier and each prompt (the held-out examples, or a JSONL file) the benchmark generates one
answer with the tier's own settings and a fixed seed, then measures:

- the PET score of the answer (pet/score.py) and its per-block breakdown;
- hygiene: did the answer end by itself (not cut at max tokens), carry the "Blocks added:" line,
  and rewrite the request rather than answer it;
- speed: time to first token, decode tokens/s, and the peak resident memory while the tier served
  (each tier is loaded on its own and released after its turn, so the peaks are comparable);
- with references (not --quick): similarity to the curated reference answer (all-MiniLM-L6-v2
  cosine), the reference's held-out loss / perplexity under the tier where the backend gives
  log-probabilities, and a judged win rate against the reference. The judge compares the two in
  both orders; a verdict counts only when both orders agree, otherwise it is a tie. On llama.cpp the
  verdict is grammar-constrained, so it always parses; on other backends a reply that does not
  parse is counted as unparsed, never as a tie.

Any two tiers are compared per metric as the mean paired difference over prompts with a bootstrap
95% interval. Each run is stored in SQLite (bench_runs, bench_items) with each tier's model,
adapter hash and settings; runs with the same prompts and judge are comparable.

API (stable):
    run(engine, BenchConfig(...), progress=None) -> summary dict (see `summary_json`)
    load_prompts(split, engine, quick, limit) -> PromptSet
    paired_diff(a, b) -> {"diff", "ci_low", "ci_high", "n", "includes_zero"} or None
    runs(store), get_run(store, run_id), history(store, metric)
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pet import PetError, score

QUICK_PROMPTS = 8  # --quick: this many held-out prompts, fixed (see load_prompts)
BOOT_ROUNDS = 2000
JUDGE_MAX_TOKENS = 24
DEFAULT_PAIRS = (("enhanced", "base"), ("enhanced", "light"))

# Per-prompt metrics a comparison can be made on; the tier summary gives each one's mean.
METRICS = {
    "pet_score": "PET score (0-100)",
    "win": "judged win rate vs the reference",
    "similarity": "similarity to the reference (cosine)",
    "loss": "held-out loss of the reference (nats/token)",
    "ttft_s": "time to first token (s)",
    "tok_s": "decode tokens/s",
    "ends": "share of answers that end by themselves",
    "blocks_line": "share with the \"Blocks added:\" line",
    "rewrite": "share that rewrite the request (not answer it)",
}
HIGHER_IS_BETTER = {"loss": False, "ttft_s": False}

SCHEMA = """
CREATE TABLE IF NOT EXISTS bench_runs (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    source TEXT NOT NULL,          -- where the prompts came from
    prompts_sha TEXT NOT NULL,     -- SHA-256 of the exact prompts and references, in order
    n_prompts INTEGER NOT NULL,
    judge TEXT NOT NULL DEFAULT '',
    quick INTEGER NOT NULL,
    config TEXT NOT NULL,          -- JSON: the run's settings
    tiers TEXT NOT NULL,           -- JSON list: per tier its identity (model, adapter sha256), params, summary
    skipped TEXT NOT NULL,         -- JSON list: tiers that could not run, and why
    comparisons TEXT NOT NULL,     -- JSON list: paired differences with bootstrap intervals
    elapsed_s REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS bench_runs_created ON bench_runs (created);
CREATE TABLE IF NOT EXISTS bench_items (
    run_id TEXT NOT NULL REFERENCES bench_runs(id) ON DELETE CASCADE,
    tier TEXT NOT NULL,
    idx INTEGER NOT NULL,
    prompt TEXT NOT NULL,
    answer TEXT NOT NULL,
    metrics TEXT NOT NULL,         -- JSON: pet_score, blocks, penalties, hygiene, speed, similarity, loss, verdict
    PRIMARY KEY (run_id, tier, idx)
) WITHOUT ROWID;
"""


# -- configuration ------------------------------------------------------------------------------------

@dataclass
class BenchConfig:
    """One benchmark run. `tiers` empty = every tier of the tiers file that can run here."""

    tiers: list[str] = field(default_factory=list)
    split: str = "heldout"  # "heldout" or a JSONL file of prompts (optionally with references)
    limit: int | None = None
    judge: str | None = None
    quick: bool = False
    pairs: list[tuple[str, str]] | None = None  # None = enhanced vs base and enhanced vs light
    seed: int = 0
    max_new_tokens: int | None = None  # None = each tier's own
    rounds: int = BOOT_ROUNDS

    def problems(self, engine) -> list[str]:
        """Every problem, each naming its flag."""
        out = []
        bad = [t for t in self.tiers if not engine.tiers.known(t)]
        if bad:
            out.append(f"--tiers: unknown tier(s) {', '.join(bad)} (choose from {', '.join(engine.tiers.names())}, "
                       "or ollama:MODEL)")
        if self.judge is not None and not engine.tiers.known(self.judge):
            out.append(f"--judge: unknown tier {self.judge!r} (choose from {', '.join(engine.tiers.names())}, "
                       "or ollama:MODEL)")
        if self.quick and self.judge:
            out.append("--judge: --quick runs no judge; drop one of the two")
        if self.limit is not None and self.limit < 1:
            out.append(f"--limit: must be at least 1, got {self.limit}")
        if self.max_new_tokens is not None and not 1 <= self.max_new_tokens <= 8192:
            out.append(f"--max-tokens: must be between 1 and 8192, got {self.max_new_tokens}")
        if self.split != "heldout" and not Path(self.split).expanduser().is_file():
            out.append(f"--split: {self.split!r} is neither 'heldout' nor a file: give a JSONL file of prompts")
        for a, b in self.pairs or []:
            if a == b:
                out.append(f"--pairs: {a}:{b} compares a tier with itself")
            unknown = [t for t in (a, b) if not engine.tiers.known(t)]
            if unknown:
                out.append(f"--pairs: unknown tier(s) {', '.join(unknown)} in {a}:{b}")
        if not 100 <= self.rounds <= 100_000:
            out.append(f"rounds: must be between 100 and 100000, got {self.rounds}")
        return out

    def check(self, engine) -> BenchConfig:
        p = self.problems(engine)
        if p:
            raise PetError("; ".join(p))
        return self


def parse_pairs(text: str | None) -> list[tuple[str, str]] | None:
    """"a:b,c:d" -> [("a","b"), ("c","d")]; None or "" -> None (the default pairs)."""
    if not text or not text.strip():
        return None
    out = []
    for part in text.split(","):
        a, sep, b = part.strip().partition(":")
        if not sep or not a or not b:
            raise PetError(f"--pairs: {part.strip()!r} is not TIER:TIER (e.g. enhanced:base)")
        out.append((a, b))
    return out


# -- prompts --------------------------------------------------------------------------------------------

@dataclass
class PromptSet:
    items: list[dict]  # {"prompt": str, "reference": str | None}
    source: str

    @property
    def sha256(self) -> str:
        h = hashlib.sha256()
        for it in self.items:
            h.update(json.dumps([it["prompt"], it.get("reference")], ensure_ascii=False).encode("utf-8"))
            h.update(b"\n")
        return h.hexdigest()

    @property
    def has_references(self) -> bool:
        return any(it.get("reference") for it in self.items)


def _reference(example: dict) -> str | None:
    msgs = example.get("messages") or []
    return next((m.get("content") for m in reversed(msgs) if m.get("role") == "assistant"), None)


def read_prompt_file(path: str | Path) -> list[dict]:
    """A JSONL of prompts: each line {"prompt": ..., "reference": optional} or a {"messages": [...]} example
    (its first user turn is the prompt, its last assistant turn the reference). Every bad line is named."""
    from pet.dataset import first_user

    items, problems = [], []
    try:
        lines = Path(path).expanduser().read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise PetError(f"--split: cannot read {path}: {e}") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(f"line {n}: not JSON ({e.msg} at column {e.colno})")
            continue
        if isinstance(rec, dict) and isinstance(rec.get("prompt"), str) and rec["prompt"].strip():
            ref = rec.get("reference")
            if ref is not None and not isinstance(ref, str):
                problems.append(f"line {n}: \"reference\" must be text")
                continue
            items.append({"prompt": rec["prompt"].strip(), "reference": ref or None})
        elif isinstance(rec, dict) and isinstance(rec.get("messages"), list) and first_user(rec).strip():
            items.append({"prompt": first_user(rec).strip(), "reference": _reference(rec)})
        else:
            problems.append(f"line {n}: needs \"prompt\" (text) or \"messages\" with a user turn")
    if problems:
        raise PetError(f"--split {path}: {len(problems)} bad line(s): " + "; ".join(problems[:10])
                       + (f"; and {len(problems) - 10} more" if len(problems) > 10 else ""))
    if not items:
        raise PetError(f"--split {path}: no prompts in the file")
    return items


def load_prompts(split: str, engine=None, quick: bool = False, limit: int | None = None) -> PromptSet:
    """The prompts to run. "heldout": the held-out examples of the current dataset version (the dataset
    store when there is one, else data/pet_examples.jsonl). --quick takes a fixed subset: the held-out
    examples ordered by the hash of their request, first QUICK_PROMPTS; the set only changes when the
    held-out examples do."""
    from pet import dataset

    if split == "heldout":
        examples, source = None, ""
        if engine is not None:
            try:
                from pet.datastore import DatasetStore

                version, examples = DatasetStore(engine.store).current()
                source = f"held-out examples of dataset version {version}"
            except (ImportError, PetError):
                examples = None
        if not examples:
            examples, source = dataset.read_jsonl(dataset.SHIPPED), f"held-out examples of {dataset.SHIPPED.name}"
        _, held = dataset.split(examples)
        if quick:
            held = sorted(held, key=dataset.example_key)[:QUICK_PROMPTS]
            source += f" (quick: fixed {len(held)})"
        items = [{"prompt": dataset.first_user(e).strip(), "reference": _reference(e)} for e in held]
        items = [it for it in items if it["prompt"]]
    else:
        items, source = read_prompt_file(split), str(split)
        if quick:
            items = items[:QUICK_PROMPTS]
    if limit is not None:
        items = items[:limit]
    if not items:
        raise PetError("no held-out examples to run: add examples (the Data tab) or pass --split FILE")
    return PromptSet(items, source)


# -- the judge ------------------------------------------------------------------------------------------

JUDGE_SYSTEM = ("You are a strict judge of prompt improvements. A user gave a rough request; two prompt "
                "engineers each rewrote it as a prompt for another AI model. The better prompt keeps the "
                "request's subject and adds what the model needs: a role, the task and deliverable, context, "
                "constraints, steps, an example and an exact output format, without answering the request "
                "itself. Reply with JSON only: {\"verdict\": \"A\"}, {\"verdict\": \"B\"} or {\"verdict\": \"tie\"}.")

# GBNF for llama.cpp: the sampler can only produce one of the three verdict objects.
VERDICT_GBNF = r'''root ::= "{" ws "\"verdict\"" ws ":" ws verdict ws "}"
verdict ::= "\"A\"" | "\"B\"" | "\"tie\""
ws ::= " "?
'''


def judge_messages(request: str, first: str, second: str) -> list[dict]:
    return [{"role": "user", "content":
             f"Request:\n<<<\n{request}\n>>>\n\nPrompt A:\n<<<\n{first}\n>>>\n\nPrompt B:\n<<<\n{second}\n>>>\n\n"
             "Which is the better prompt for the request? Reply with JSON only, e.g. {\"verdict\": \"A\"}."}]


_OBJ = re.compile(r"\{[^{}]*\}")


def parse_verdict(text: str) -> str | None:
    """A judge's reply -> "a", "b", "tie", or None when it is not a verdict object.

    Strict on purpose: only {"verdict": "A"|"B"|"tie"} (alone, or the first {...} in the reply) counts.
    A reply that cannot be read is None, and the benchmark counts it as unparsed, never as a tie."""
    t = (text or "").strip()
    for cand in [t] + _OBJ.findall(t):
        try:
            obj = json.loads(cand)
        except (json.JSONDecodeError, ValueError):
            continue
        if isinstance(obj, dict) and isinstance(obj.get("verdict"), str):
            v = obj["verdict"].strip().lower()
            if v in ("a", "b", "tie"):
                return v
    return None


def combine(first: str | None, swapped: str | None) -> tuple[str, bool | None]:
    """Verdicts on (A=answer, B=reference) and (A=reference, B=answer) -> the answer's outcome and
    whether the two orders agreed: ("win"|"loss"|"tie", agreed) or ("unparsed", None)."""
    if first is None or swapped is None:
        return "unparsed", None
    as_answer = {"a": "win", "b": "loss", "tie": "tie"}
    one, two = as_answer[first], {"a": "loss", "b": "win", "tie": "tie"}[swapped]
    if one == two:
        return one, True
    return "tie", False


def judge_pair(engine, judge: str, request: str, answer: str, reference: str) -> dict:
    """Judge one answer against the reference in both orders."""
    constrained = engine.supports_grammar(judge)
    params = engine.params_for(judge, temperature=0.0, max_new_tokens=JUDGE_MAX_TOKENS, seed=0)
    replies, verdicts = [], []
    for a, b in ((answer, reference), (reference, answer)):
        from pet.backends.base import collect

        text = collect(engine.stream(judge, judge_messages(request, a, b), params, system=JUDGE_SYSTEM,
                                     grammar=VERDICT_GBNF if constrained else None)).text
        replies.append(text)
        verdicts.append(parse_verdict(text))
    outcome, agreed = combine(verdicts[0], verdicts[1])
    return {"verdict": outcome, "agreed": agreed, "orders": verdicts, "replies": replies,
            "constrained": constrained}


WIN_VALUE = {"win": 1.0, "tie": 0.5, "loss": 0.0}


# -- statistics -----------------------------------------------------------------------------------------

def paired_diff(a: list[float | None], b: list[float | None], rounds: int = BOOT_ROUNDS,
                seed: int = 0) -> dict | None:
    """Mean of a_i - b_i over the prompts where both have a value, with a bootstrap 95% interval
    (percentile method, prompts resampled with replacement). None when fewer than 2 pairs."""
    d = np.array([x - y for x, y in zip(a, b) if x is not None and y is not None], dtype=float)
    if len(d) < 2:
        return None
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(rounds, len(d)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"diff": round(float(d.mean()), 4), "ci_low": round(float(lo), 4), "ci_high": round(float(hi), 4),
            "n": int(len(d)), "includes_zero": bool(lo <= 0 <= hi)}


def mean_ci(xs: list[float | None], rounds: int = BOOT_ROUNDS, seed: int = 0) -> tuple[float | None, list | None]:
    """Mean and bootstrap 95% interval of the values that are not None."""
    v = np.array([x for x in xs if x is not None], dtype=float)
    if len(v) == 0:
        return None, None
    if len(v) == 1:
        return round(float(v[0]), 4), None
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(rounds, len(v)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return round(float(v.mean()), 4), [round(float(lo), 4), round(float(hi), 4)]


def _mean(xs) -> float | None:
    v = [x for x in xs if x is not None]
    return round(float(np.mean(v)), 4) if v else None


# -- identity and memory --------------------------------------------------------------------------------

def adapter_sha256(adapter: str | None) -> str | None:
    """SHA-256 over the adapter's weight files (*.gguf, *.safetensors, by name): which fine-tune ran."""
    if not adapter:
        return None
    folder = Path(adapter)
    files = sorted(p for p in folder.glob("*") if p.suffix in (".gguf", ".safetensors") and p.is_file())
    if not files:
        return None
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode())
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def tier_identity(engine, tier: str) -> dict:
    from pet.arena import identity

    ident = identity(engine, tier)
    ident.pop("system_prompt", None)
    spec = engine.tiers.spec(tier)
    ident["system_prompt_sha256"] = hashlib.sha256((spec.system_prompt or "").encode()).hexdigest()[:16]
    ident["adapter_sha256"] = adapter_sha256(spec.adapter)
    return ident


def rss_mb() -> float:
    """This process's resident memory now (Linux /proc; elsewhere the peak so far)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- progress ---------------------------------------------------------------------------------------------

@dataclass
class Progress:
    done: float
    total: float
    message: str
    elapsed_s: float
    eta_s: float | None

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 1.0

    def line(self) -> str:
        eta = "ETA --" if self.eta_s is None else f"ETA {fmt_seconds(self.eta_s)}"
        return f"{self.fraction:4.0%} · {self.message} · {eta}"


def fmt_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


# Relative cost of each step, for the ETA: a judged pair is two short constrained replies; a loss pass
# is one prefill; the embeddings of a whole run take about one generation.
COST = {"generate": 1.0, "loss": 0.25, "judge": 0.6, "embed": 0.05}


class Tracker:
    def __init__(self, total: float, callback: Callable[[Progress], None] | None):
        self.total, self.done, self.callback = total, 0.0, callback
        self.t0 = time.perf_counter()

    def step(self, kind: str, message: str) -> None:
        self.done += COST[kind]
        self.report(message)

    def finish(self) -> None:
        """Steps skipped on the way (a backend without log-probabilities) leave no gap: the run is done."""
        self.done = self.total
        self.report("done")

    def report(self, message: str) -> None:
        if self.callback is None:
            return
        el = time.perf_counter() - self.t0
        eta = el / self.done * (self.total - self.done) if self.done > 0 else None
        self.callback(Progress(self.done, self.total, message, el, eta))


# -- the run ------------------------------------------------------------------------------------------------

def default_pairs(tiers: list[str]) -> list[tuple[str, str]]:
    pairs = [(a, b) for a, b in DEFAULT_PAIRS if a in tiers and b in tiers]
    if not pairs and len(tiers) >= 2:
        pairs = [(tiers[0], t) for t in tiers[1:]]
    return pairs


def _item_metrics(prompt: str, answer: str, stats) -> dict:
    s = score.score_prompt(answer, prompt)
    return {"pet_score": s.total, "blocks": s.credit, "penalties": s.penalties,
            "ends": 1.0 if stats.finish_reason == "stop" else 0.0,
            "blocks_line": 1.0 if score.has_blocks_line(answer) else 0.0,
            "rewrite": 0.0 if score.is_answer_not_rewrite(prompt, answer) else 1.0,
            "finish_reason": stats.finish_reason, "tokens": stats.tokens,
            "ttft_s": round(stats.ttft_s, 4), "tok_s": round(stats.tok_s, 2) if stats.tokens > 1 else None}


def _generate(engine, tier: str, prompts: PromptSet, cfg: BenchConfig, track: Tracker) -> tuple[list[dict], float]:
    """One answer per prompt; returns the items and the peak resident memory while serving."""
    from pet.backends.base import Stats

    params = engine.params_for(tier, seed=cfg.seed, max_new_tokens=cfg.max_new_tokens)
    warm = [{"role": "user", "content": prompts.items[0]["prompt"]}]
    for _ in engine.stream(tier, warm, params.with_overrides(max_new_tokens=4)):  # load + warm up, untimed
        pass
    peak = rss_mb()
    items = []
    for i, it in enumerate(prompts.items):
        st, parts = Stats(), []
        for ch in engine.stream(tier, [{"role": "user", "content": it["prompt"]}], params):
            parts.append(ch.text)
            st.update(ch)
            if ch.done or st.tokens % 16 == 0:
                peak = max(peak, rss_mb())
        answer = "".join(parts)
        items.append({"idx": i, "prompt": it["prompt"], "answer": answer, "metrics": _item_metrics(it["prompt"], answer, st)})
        track.step("generate", f"{tier}: answer {i + 1}/{len(prompts.items)}")
    return items, peak


def _losses(engine, tier: str, prompts: PromptSet, items: list[dict], track: Tracker) -> str | None:
    """Reference loss per prompt (nats/token) where the backend gives log-probabilities; else the reason."""
    from pet.backends.base import BackendError

    for it, p in zip(items, prompts.items):
        if p.get("reference"):
            try:
                lp = engine.logprobs(tier, [{"role": "user", "content": p["prompt"]}], p["reference"])
            except BackendError as e:
                return str(e)
            it["metrics"]["loss"] = round(-float(np.mean(lp)), 5) if lp else None
            it["metrics"]["loss_tokens"] = len(lp)
        track.step("loss", f"{tier}: reference loss {it['idx'] + 1}/{len(items)}")
    return None


def _release(engine, tier: str) -> None:
    """Drop a tier's loaded model (it reloads on next use) so the next tier's memory peak is its own."""
    from pet.tiers import is_adhoc

    if not is_adhoc(tier):
        engine.tiers.put(engine.tiers.spec(tier))


def _summary(tier: str, items: list[dict], peak: float, rounds: int) -> dict:
    m = [it["metrics"] for it in items]
    col = lambda k: [x.get(k) for x in m]  # noqa: E731
    pet, pet_ci = mean_ci(col("pet_score"), rounds)
    wins = [WIN_VALUE.get(x.get("verdict")) for x in m]
    win, win_ci = mean_ci(wins, rounds)
    verdicts = [x.get("verdict") for x in m if x.get("verdict")]
    agreed = [x.get("agreed") for x in m if x.get("agreed") is not None]
    tok_counts = [x.get("loss_tokens") or 0 for x in m]
    losses = col("loss")
    loss = None
    if any(v is not None for v in losses):
        # Token-weighted, as a trainer's held-out loss is: total nats over total reference tokens.
        tot = sum(v * n for v, n in zip(losses, tok_counts) if v is not None)
        loss = round(tot / max(1, sum(n for v, n in zip(losses, tok_counts) if v is not None)), 4)
    return {
        "tier": tier, "n": len(items),
        "pet_score": pet, "pet_score_ci": pet_ci,
        "blocks": {k: _mean([x["blocks"][k] for x in m]) for k in score.WEIGHTS},
        "penalties": {k: _mean([x["penalties"][k] for x in m]) for k in score.PENALTY_MAX},
        "win_rate": win, "win_rate_ci": win_ci,
        "wins": verdicts.count("win"), "ties": verdicts.count("tie"), "losses": verdicts.count("loss"),
        "unparsed": verdicts.count("unparsed"),
        "judge_agreement": round(sum(agreed) / len(agreed), 4) if agreed else None,
        "similarity": _mean(col("similarity")),
        "loss": loss, "ppl": round(math.exp(loss), 3) if loss is not None else None,
        "ttft_s": _mean(col("ttft_s")), "tok_s": _mean(col("tok_s")),
        "peak_rss_mb": round(peak, 1),
        "ends_share": _mean(col("ends")), "blocks_line_share": _mean(col("blocks_line")),
        "rewrite_share": _mean(col("rewrite")),
    }


def _runnable(engine, wanted: list[str]) -> tuple[list[str], list[dict]]:
    """The tiers that can run here, and the others with the reason each was skipped."""
    tiers, skipped = [], []
    for t in wanted:
        st = engine.tiers.status(t)
        if st["available"]:
            tiers.append(t)
        else:
            skipped.append({"tier": t, "reason": st["reason"] or "unavailable"})
    return tiers, skipped


def _similarities(prompts: PromptSet, per_tier: dict[str, list[dict]], track: Tracker) -> None:
    """Each answer's embedding similarity to its reference, into its metrics."""
    from pet import embed

    ref_idx = [i for i, it in enumerate(prompts.items) if it.get("reference")]
    ref_vecs = embed.encode([prompts.items[i]["reference"] for i in ref_idx])
    for tier, items in per_tier.items():
        vecs = embed.encode([items[i]["answer"] for i in ref_idx])
        for row, i in enumerate(ref_idx):
            items[i]["metrics"]["similarity"] = round(float(vecs[row] @ ref_vecs[row]), 4)
        track.step("embed", f"{tier}: similarity to the references")


def _judge_all(engine, judge: str, prompts: PromptSet, per_tier: dict[str, list[dict]], track: Tracker) -> None:
    """The judge's verdict (both orders) on every answer that has a reference, into its metrics."""
    n = len(prompts.items)
    for tier, items in per_tier.items():
        for it, p in zip(items, prompts.items):
            if not p.get("reference"):
                continue
            j = judge_pair(engine, judge, p["prompt"], it["answer"], p["reference"])
            it["metrics"].update(verdict=j["verdict"], agreed=j["agreed"], judge_orders=j["orders"],
                                 judge_replies=j["replies"], judge_constrained=j["constrained"])
            track.step("judge", f"judge {judge}: {tier} answer {it['idx'] + 1}/{n}")


def _tier_summary(engine, cfg: BenchConfig, tier: str, items: list[dict], info: dict, judge: str | None) -> dict:
    s = _summary(tier, items, info["peak_rss_mb"], cfg.rounds)
    s["loss_note"] = info["loss_note"]
    s["judge_constrained"] = engine.supports_grammar(judge) if judge else None
    s["ident"] = tier_identity(engine, tier)
    s["params"] = engine.params_for(tier, seed=cfg.seed, max_new_tokens=cfg.max_new_tokens).as_dict()
    return s


def run(engine, cfg: BenchConfig, progress: Callable[[Progress], None] | None = None) -> dict:
    """Run the benchmark, store it, and return its summary (see summary_json for the shape)."""
    from pet.backends.base import BackendError

    cfg.check(engine)
    t0 = time.perf_counter()
    prompts = load_prompts(cfg.split, engine, cfg.quick, cfg.limit)
    tiers, skipped = _runnable(engine, list(dict.fromkeys(cfg.tiers or engine.tiers.names())))
    if not tiers:
        raise PetError("no tier can run here: " + "; ".join(f"{s['tier']}: {s['reason']}" for s in skipped))
    full = not cfg.quick
    refs = full and prompts.has_references
    judge = cfg.judge if refs else None
    if cfg.judge and not refs:
        raise PetError("--judge needs reference answers: use the held-out split or a file with \"reference\" fields")
    n = len(prompts.items)
    n_refs = sum(1 for it in prompts.items if it.get("reference"))
    total = len(tiers) * n * COST["generate"]
    if refs:
        total += len(tiers) * (n_refs * COST["loss"] + n * COST["embed"])
    if judge:
        total += len(tiers) * n_refs * COST["judge"]
    track = Tracker(total, progress)
    track.report(f"{len(tiers)} tier(s) x {n} prompts")

    per_tier: dict[str, list[dict]] = {}
    info: dict[str, dict] = {}
    for tier in tiers:
        was_loaded = engine.tiers.loaded(tier) is not None
        try:
            items, peak = _generate(engine, tier, prompts, cfg, track)
        except (BackendError, PetError) as e:
            skipped.append({"tier": tier, "reason": str(e)})
            continue
        info[tier] = {"peak_rss_mb": peak, "loss_note": None}
        if refs:
            info[tier]["loss_note"] = _losses(engine, tier, prompts, items, track)
        per_tier[tier] = items
        if not was_loaded:
            _release(engine, tier)
    if not per_tier:
        raise PetError("no tier could answer: " + "; ".join(f"{s['tier']}: {s['reason']}" for s in skipped))

    if refs:
        _similarities(prompts, per_tier, track)
    if judge:
        _judge_all(engine, judge, prompts, per_tier, track)
    summaries = [_tier_summary(engine, cfg, tier, items, info[tier], judge) for tier, items in per_tier.items()]
    comparisons = compare(per_tier, cfg.pairs or default_pairs(list(per_tier)), cfg.rounds)
    run_id = uuid.uuid4().hex[:12]
    elapsed = round(time.perf_counter() - t0, 1)
    config = {"tiers": tiers, "split": cfg.split, "limit": cfg.limit, "judge": judge, "quick": cfg.quick,
              "seed": cfg.seed, "max_new_tokens": cfg.max_new_tokens, "rounds": cfg.rounds,
              "pairs": [list(p) for p in (cfg.pairs or default_pairs(list(per_tier)))]}
    save(engine.store, run_id, prompts, config, judge or "", cfg.quick, summaries, skipped, comparisons,
         per_tier, elapsed)
    track.finish()
    return get_run(engine.store, run_id)


def compare(per_tier: dict[str, list[dict]], pairs: list[tuple[str, str]], rounds: int = BOOT_ROUNDS) -> list[dict]:
    """Paired differences a - b for every metric both tiers have, with bootstrap 95% intervals."""
    out = []
    for a, b in pairs:
        if a not in per_tier or b not in per_tier:
            continue
        for metric in METRICS:
            va = [_metric_value(it["metrics"], metric) for it in per_tier[a]]
            vb = [_metric_value(it["metrics"], metric) for it in per_tier[b]]
            d = paired_diff(va, vb, rounds)
            if d is not None:
                out.append({"a": a, "b": b, "metric": metric, **d})
    return out


def _metric_value(m: dict, metric: str) -> float | None:
    if metric == "win":
        return WIN_VALUE.get(m.get("verdict"))
    return m.get(metric)


# -- storage --------------------------------------------------------------------------------------------

def save(store, run_id, prompts: PromptSet, config, judge, quick, summaries, skipped, comparisons, per_tier,
         elapsed) -> None:
    """Write a run and all its answers in one transaction: a crash leaves no half-written run."""
    store.ensure(SCHEMA)
    with store.transaction() as c:
        c.execute("INSERT INTO bench_runs (id, created, source, prompts_sha, n_prompts, judge, quick, config, tiers,"
                  " skipped, comparisons, elapsed_s) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                  (run_id, time.time(), prompts.source, prompts.sha256, len(prompts.items), judge, int(quick),
                   json.dumps(config), json.dumps(summaries), json.dumps(skipped), json.dumps(comparisons), elapsed))
        c.executemany("INSERT INTO bench_items (run_id, tier, idx, prompt, answer, metrics) VALUES (?,?,?,?,?,?)",
                      [(run_id, tier, it["idx"], it["prompt"], it["answer"], json.dumps(it["metrics"], ensure_ascii=False))
                       for tier, items in per_tier.items() for it in items])


def _run_row(r) -> dict:
    d = dict(r)
    for k in ("config", "tiers", "skipped", "comparisons"):
        d[k] = json.loads(d[k])
    d["quick"] = bool(d["quick"])
    d["run_id"] = d.pop("id")
    return d


def get_run(store, run_id: str) -> dict:
    store.ensure(SCHEMA)
    rows = store.query("SELECT * FROM bench_runs WHERE id = ?", (run_id,))
    if not rows:
        raise PetError(f"no benchmark run with id {run_id!r}: `python -m pet bench runs` lists them")
    return _run_row(rows[0])


def items(store, run_id: str, tier: str | None = None) -> list[dict]:
    store.ensure(SCHEMA)
    sql, args = "SELECT * FROM bench_items WHERE run_id = ?", [run_id]
    if tier:
        sql, args = sql + " AND tier = ?", args + [tier]
    return [{**dict(r), "metrics": json.loads(r["metrics"])} for r in store.query(sql + " ORDER BY tier, idx", args)]


def comparable_key(run: dict) -> tuple:
    """Runs are comparable when they ran the same prompts (and references) with the same judge."""
    return (run["prompts_sha"], run["judge"])


def runs(store, limit: int = 100) -> list[dict]:
    """Stored runs, newest first, each with `group`: runs that share a group letter are comparable."""
    store.ensure(SCHEMA)
    out = [_run_row(r) for r in store.query("SELECT * FROM bench_runs ORDER BY created DESC LIMIT ?", (limit,))]
    groups: dict[tuple, str] = {}
    for r in reversed(out):  # the oldest run's group is "A"
        key = comparable_key(r)
        if key not in groups:
            groups[key] = _letters(len(groups))
        r["group"] = groups[key]
    return out


def _letters(i: int) -> str:
    s = ""
    i += 1
    while i:
        i, rem = divmod(i - 1, 26)
        s = chr(65 + rem) + s
    return s


TIER_METRICS = {"pet_score": "PET score", "win_rate": "win rate vs reference", "similarity": "similarity",
                "loss": "reference loss", "ppl": "perplexity", "ttft_s": "TTFT (s)", "tok_s": "tokens/s",
                "peak_rss_mb": "peak memory (MB)", "ends_share": "ends by itself",
                "blocks_line_share": "has Blocks line", "rewrite_share": "rewrites (not answers)"}


def history(store, metric: str, limit: int = 100) -> list[dict]:
    """One row per (run, tier) with the metric's value, oldest run first, for plotting across runs."""
    if metric not in TIER_METRICS:
        raise PetError(f"unknown metric {metric!r}; choose from {', '.join(TIER_METRICS)}")
    rows = []
    for r in reversed(runs(store, limit)):
        for t in r["tiers"]:
            ci = t.get(f"{metric}_ci")
            rows.append({"run_id": r["run_id"], "created": r["created"], "group": r["group"], "tier": t["tier"],
                         "value": t.get(metric), "ci_low": ci[0] if ci else None, "ci_high": ci[1] if ci else None})
    return rows


def summary_json(run: dict) -> dict:
    """The --json object: {"tiers": [...], "comparisons": [...], "run_id", ...}."""
    keep = ("tier", "n", "pet_score", "pet_score_ci", "win_rate", "win_rate_ci", "wins", "ties", "losses",
            "unparsed", "judge_agreement", "judge_constrained", "similarity", "loss", "ppl", "tok_s", "ttft_s",
            "peak_rss_mb", "ends_share", "blocks_line_share", "rewrite_share", "blocks", "penalties", "ident")
    return {"run_id": run["run_id"], "source": run["source"], "prompts": run["n_prompts"],
            "prompts_sha": run["prompts_sha"], "judge": run["judge"] or None, "quick": run["quick"],
            "elapsed_s": run["elapsed_s"],
            "tiers": [{k: t.get(k) for k in keep} for t in run["tiers"]],
            "skipped": run["skipped"],
            "comparisons": [{k: c[k] for k in ("a", "b", "metric", "diff", "ci_low", "ci_high", "n", "includes_zero")}
                            for c in run["comparisons"]]}


# -- text tables (CLI, README) ----------------------------------------------------------------------------

def _fmt(v, nd=2) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def tier_table(run: dict) -> str:
    """A Markdown table of the tiers' summaries."""
    cols = [("tier", "tier", 0), ("PET score", "pet_score", 1), ("win rate", "win_rate", 2),
            ("similarity", "similarity", 3), ("ref. loss", "loss", 3), ("TTFT s", "ttft_s", 2),
            ("tok/s", "tok_s", 1), ("peak MB", "peak_rss_mb", 0), ("ends", "ends_share", 2),
            ("Blocks line", "blocks_line_share", 2), ("rewrites", "rewrite_share", 2)]
    has = lambda k: any(t.get(k) is not None for t in run["tiers"])  # noqa: E731
    cols = [c for c in cols if c[1] == "tier" or has(c[1])]
    lines = ["| " + " | ".join(c[0] for c in cols) + " |", "|" + "---|" * len(cols)]
    for t in run["tiers"]:
        cells = []
        for _, k, nd in cols:
            v = t.get(k)
            cell = _fmt(v, nd) if k != "peak_rss_mb" or v is None else f"{v:.0f}"
            ci = t.get(f"{k}_ci")
            if ci:
                cell += f" [{ci[0]:.{nd}f}, {ci[1]:.{nd}f}]"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def comparison_table(run: dict) -> str:
    """A Markdown table of the paired differences, saying plainly when an interval includes zero."""
    lines = ["| a − b | metric | diff | 95% interval | n | reading |", "|---|---|---|---|---|---|"]
    for c in run["comparisons"]:
        lines.append(f"| {c['a']} − {c['b']} | {c['metric']} | {c['diff']:+.3f} | [{c['ci_low']:+.3f}, "
                     f"{c['ci_high']:+.3f}] | {c['n']} | {reading(c)} |")
    return "\n".join(lines)


def reading(c: dict) -> str:
    """One plain sentence about a paired difference."""
    if c["includes_zero"]:
        return "interval includes zero: no clear difference"
    better = (c["diff"] > 0) == HIGHER_IS_BETTER.get(c["metric"], True)
    return f"{c['a'] if better else c['b']} is better"
