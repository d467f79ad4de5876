"""Trial of context-aware decoding for a llama.cpp tier: at each step the next token is the argmax of
(1 + a) * logits(answer | request) - a * logits(answer | no request), among the tokens with at least a tenth
of the best token's probability under the request (so the contrast cannot pick nonsense), with the tiers'
repeat penalty (1.1 over the last 64 tokens). a = 0 is plain greedy decoding through the same loop: the
control. Each step costs two forward passes. Writes answers in bench/answers.py's format for judge_pack.py.

    python bench/cad_trial.py --tier enhanced --alpha 0.5 --requests bench/dev_requests.jsonl --out a05.jsonl

Measured on the dev requests (README, "Context-aware decoding"); not a tier setting.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from answers import load_requests  # noqa: E402

from pet import templates  # noqa: E402
from pet.engine import Engine  # noqa: E402

PLAUSIBLE, MAX_NEW, PENALTY, LAST_N = 0.1, 400, 1.1, 64


def _llama(backend):
    from llama_cpp import Llama

    from pet.backends.llamacpp import native_quiet

    lora = backend.lora_path
    if lora is not None and Path(lora).is_dir():
        lora = Path(lora) / "adapter.gguf"
    with native_quiet():
        return Llama(str(backend.model_path), n_ctx=1024, n_threads=2, n_threads_batch=2, verbose=False,
                     **({"lora_path": str(lora)} if lora else {}))


def _last_logits(llm):
    import numpy as np

    return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)).astype(np.float64)


def answer(cond, uncond, tmpl, system: str, request: str, alpha: float) -> tuple[str, int, str]:
    """One greedy answer; `uncond` sees the same conversation with the request left empty."""
    import numpy as np

    def ids_for(text: str) -> list[int]:
        msgs = templates.with_system([{"role": "user", "content": text}], system)
        return cond.tokenize(tmpl.render(msgs, add_generation_prompt=True).encode(), add_bos=False, special=True)

    prompt = ids_for(request)
    cond.reset()
    cond.eval(prompt)
    if alpha:
        uncond.reset()
        uncond.eval(ids_for(""))
    ids: list[int] = []
    while len(ids) < MAX_NEW:
        lc = _last_logits(cond)
        if alpha:
            p = np.exp(lc - lc.max())
            scores = np.where(p >= PLAUSIBLE * p.max(), (1 + alpha) * lc - alpha * _last_logits(uncond), -np.inf)
        else:
            scores = lc
        recent = list(set((prompt + ids)[-LAST_N:]))
        scores[recent] = np.where(scores[recent] > 0, scores[recent] / PENALTY, scores[recent] * PENALTY)
        tok = int(scores.argmax())
        if tok == cond.token_eos():
            return cond.detokenize(ids).decode("utf-8", "ignore").strip(), len(ids), "stop"
        ids.append(tok)
        text = cond.detokenize(ids, special=True).decode("utf-8", "ignore")
        for stop in tmpl.stop:
            if stop in text:
                return text[:text.index(stop)].strip(), len(ids), "stop"
        cond.eval([tok])
        if alpha:
            uncond.eval([tok])
    return text.strip(), len(ids), "length"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tier", required=True)
    ap.add_argument("--alpha", type=float, required=True)
    ap.add_argument("--requests", default="bench/dev_requests.jsonl")
    ap.add_argument("--limit", type=int)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    eng = Engine()
    spec, backend = eng.tiers.spec(a.tier), eng.tiers.backend(a.tier)
    if spec.backend != "llamacpp":
        raise SystemExit(f"--tier {a.tier}: this trial needs a llamacpp tier (it reads the logits)")
    backend.load()
    cond, uncond = _llama(backend), (_llama(backend) if a.alpha else None)
    with open(a.out, "a", encoding="utf-8") as f:
        for i, r in enumerate(load_requests(a.requests, a.limit)):
            t0 = time.perf_counter()
            text, n, reason = answer(cond, uncond, backend.template, spec.system_prompt, r["request"], a.alpha)
            rec = {"label": f"cad{a.alpha}", "tier": f"{a.tier}_cad{a.alpha}", "i": i, "request": r["request"],
                   "answer": text, "tokens": n, "finish_reason": reason,
                   "wall_s": round(time.perf_counter() - t0, 2)}
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            f.flush()
            print(f"{i + 1} {n} tok {reason} {rec['wall_s']} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
