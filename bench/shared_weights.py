"""Resident memory of the base and enhanced tiers: one llama.cpp model each (the LoRA loaded with
lora_path=, as before) against one shared model with the LoRA set per request (what PET does now).

Each way runs in a fresh process: load both tiers, answer one short greedy request on each, then
read VmRSS (and VmHWM, the peak). Prints both and their difference.

    python bench/shared_weights.py
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[2])
from pet.backends.base import collect
from pet.backends.llamacpp import LlamaCppBackend
from pet.config import GenParams
from pet.engine import Engine

def mem():
    out = {}
    for line in open("/proc/self/status"):
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return out

eng = Engine()
msgs = [{"role": "user", "content": "improve this prompt: write a poem about rain"}]
p = GenParams(temperature=0, max_new_tokens=8)
before = mem()
if sys.argv[1] == "shared":
    tiers = [eng.tiers.backend("base"), eng.tiers.backend("enhanced")]
else:
    from pet import models
    from pet.adapters import gguf_adapter, read_adapter
    spec = eng.tiers.spec("enhanced")
    path = models.resolve(spec.model, spec.backend, eng.settings.path("models")).path
    lora = gguf_adapter(read_adapter(spec.adapter))
    tiers = [LlamaCppBackend(path, n_ctx=spec.params.n_ctx, template_override="gemma3"),
             LlamaCppBackend(path, n_ctx=spec.params.n_ctx, lora_path=lora, template_override="gemma3")]
texts = [collect(t.stream(msgs, p)).text for t in tiers]
import gc; gc.collect()
print(json.dumps({"before": before, "after": mem(), "texts": texts}))
"""


def run(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(ROOT)], capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        raise SystemExit(f"{mode} run failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    sep, sh = run("separate"), run("shared")
    for name, r in (("separate models (before)", sep), ("one shared model (now)", sh)):
        print(f"{name:26} RSS {r['after']['VmRSS']:7.0f} MB   peak {r['after']['VmHWM']:7.0f} MB   "
              f"(engine alone {r['before']['VmRSS']:.0f} MB)")
    print(f"saved: {sep['after']['VmRSS'] - sh['after']['VmRSS']:.0f} MB resident, "
          f"{sep['after']['VmHWM'] - sh['after']['VmHWM']:.0f} MB peak; same answers: {sep['texts'] == sh['texts']}")


if __name__ == "__main__":
    main()
