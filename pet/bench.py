"""Quality and speed benchmarks, shared by the CLI and the scripts in bench/."""

from __future__ import annotations

from pet.backends.base import collect


def speed(engine, tier: str, prompt: str, max_tokens: int = 128, seed: int = 0) -> dict:
    """Decode speed of one tier on one prompt (the model is loaded and warmed up first)."""
    params = engine.params_for(tier, max_new_tokens=max_tokens, seed=seed)
    msgs = [{"role": "user", "content": prompt}]
    collect(engine.stream(tier, msgs, params.with_overrides(max_new_tokens=8)))  # load + warm up
    ans = collect(engine.stream(tier, msgs, params))
    return {"tier": tier, "tokens": ans.stats.tokens, "tok_s": round(ans.stats.tok_s, 2),
            "ttft_s": round(ans.stats.ttft_s, 4)}
