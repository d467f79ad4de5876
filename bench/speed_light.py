"""Light tier through PET vs raw llama-cpp-python on the same GGUF, prompt and settings.

Prints decode tokens/s for both (median of alternating runs in this one process, since this
machine is noisy), their ratio (goal >= 0.9), and the resident memory with the default local
tiers loaded together (goal < 1.5 GB).

    python bench/speed_light.py [--runs 5] [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def raw_decode_tok_s(llm, prompt_tokens, kw) -> tuple[float, int]:
    t0 = time.perf_counter()
    first, n = None, 0
    for part in llm.create_completion(prompt_tokens, stream=True, **kw):
        if part["choices"][0]["text"]:
            n += 1
            if first is None:
                first = time.perf_counter()
    end = time.perf_counter()
    return ((n - 1) / (end - first) if n > 1 else 0.0), n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--prompt", default="improve this prompt: write a short story about a lighthouse keeper")
    args = ap.parse_args()

    from llama_cpp import Llama

    from pet.backends.base import collect
    from pet.engine import Engine

    eng = Engine()
    tier = "light"
    params = eng.params_for(tier, max_new_tokens=args.max_tokens, seed=1)
    msgs = [{"role": "user", "content": args.prompt}]
    pet_backend = eng.tiers.backend(tier)
    collect(eng.stream(tier, msgs, params))  # warm up

    # The raw baseline: same file, same context size and threads, the exact prompt tokens PET sends.
    from pet import templates

    full = templates.with_system(msgs, eng.tiers.spec(tier).system_prompt)
    prompt_tokens = pet_backend.prompt_tokens(full)
    raw = Llama(str(pet_backend.model_path), n_ctx=pet_backend.n_ctx, n_threads=pet_backend.n_threads, verbose=False)
    kw = dict(max_tokens=args.max_tokens, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k,
              repeat_penalty=params.repeat_penalty, stop=list(pet_backend.template.stop), seed=1)
    raw_decode_tok_s(raw, prompt_tokens, kw)  # warm up

    pet_rates, raw_rates = [], []
    for _ in range(args.runs):
        a = collect(eng.stream(tier, msgs, params))
        pet_rates.append(a.stats.tok_s)
        r, _n = raw_decode_tok_s(raw, prompt_tokens, kw)
        raw_rates.append(r)
    p, r = statistics.median(pet_rates), statistics.median(raw_rates)
    print(f"light tier decode: PET {p:.1f} tok/s, raw llama-cpp-python {r:.1f} tok/s "
          f"({args.runs} alternating runs, median)")
    adapter = pet_backend.lora_path
    print(f"ratio PET/raw = {p / r:.3f} " + (f"(the tier's LoRA {adapter.name} included, the raw baseline has none: "
                                             "goal >= 0.8)" if adapter else "(goal >= 0.9)"))
    del raw

    # Memory: the default local tiers (every llama.cpp/hf tier in the tiers file) loaded together.
    before = rss_mb()
    loaded = []
    for st in eng.tier_status():
        if st["available"] and st["backend"] != "ollama":
            collect(eng.stream(st["name"], msgs, params.with_overrides(max_new_tokens=4)))
            loaded.append(st["name"])
    total = rss_mb()
    print(f"resident memory with tiers {', '.join(loaded)} loaded: {total:.0f} MB "
          f"(process before loading the others: {before:.0f} MB; goal < 1536 MB)")


if __name__ == "__main__":
    os.environ.setdefault("PET_HOME", str(Path.home() / ".cache" / "pet-studio-bench"))
    main()
