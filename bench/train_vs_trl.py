"""PET's trainer against TRL's SFTTrainer, twice: with TRL's defaults and with TRL tuned for a CPU.

    python bench/train_vs_trl.py [--model FOLDER] [--steps 12] [--trl-default-steps 6] [--eval-every 3]

All three train LoRA r=8 (alpha 16) on all linear layers of the same model and the same train split,
8 examples per optimizer step:
  PET          batch 1 x 8 accumulation steps, bf16 where the CPU has it, no checkpointing, lr 2e-4
  TRL defaults TRL's SFTConfig as it comes (batch 8 padded, gradient checkpointing, lr 2e-5, its
               precision); only what it needs to run here is set (output_dir, max_steps, no saving,
               no reporting, CPU)
  TRL tuned    what a careful user would set: no gradient checkpointing, padding-free batches of 4 x 2
               accumulation steps, bf16 where the CPU has it, lr 2e-4 (PET's)
Reported for each: non-padding training tokens/s (the first step left out as warm-up), held-out loss
of the final adapter (one function for all: assistant tokens only, PET's template), and the training
seconds (evaluations left out) to reach an equal held-out loss: the highest final loss of PET and
TRL tuned, so both reach it. Held-out loss along the way is measured every --eval-every steps with
PET's loss function in both trainers. Two ratios against each baseline: tokens/s, and time to that
loss. Default model: the enhanced tier's Gemma 3 270M (its dequantised folder). The rate needs a few
steps to settle: keep --steps at 12 or more for numbers worth quoting.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pet import dataset  # noqa: E402
from pet.templates import BUILTIN, GEMMA3, with_system  # noqa: E402
from pet.train import trainer as pet_trainer  # noqa: E402

LORA = {"r": 8, "alpha": 16}
EXAMPLES_PER_STEP = 8
MAX_LEN = 1024


def default_model() -> tuple[str, str]:
    from pet import models
    from pet.engine import Engine

    eng = Engine()
    spec = eng.tiers.spec("enhanced")
    ref = models.resolve(spec.model, spec.backend, eng.settings.path("models"))
    return models.hf_folder(ref, eng.settings.path("cache", "hf")), spec.system_prompt


class HeldOut:
    """Held-out loss over the assistant tokens, one function for every trainer (bf16 autocast where fast)."""

    def __init__(self, folder: str, held: list[dict], system: str):
        from transformers import AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(folder)
        self.enc, _ = pet_trainer.encode(held, self.tok, BUILTIN["gemma3"], system, MAX_LEN)
        self.bf16 = pet_trainer.cpu_supports_bf16()

    def __call__(self, model) -> float:
        import torch

        was_training = model.training
        model.eval()
        loss_mod = pet_trainer.make_label_loss(model)
        tot, cnt = 0.0, 0
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            for item in self.enc:
                ids, mask, labels = (t.to(next(model.parameters()).device)
                                     for t in pet_trainer.collate([item], self.tok.pad_token_id or 0))
                s, n = loss_mod(ids, mask, labels)
                tot, cnt = tot + float(s), cnt + int(n)
        model.train(was_training)
        return tot / cnt

    def of_adapter(self, folder: str, adapter: str | None) -> float:
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        if adapter:
            model = PeftModel.from_pretrained(model, adapter)
        return self(model)


def run_pet(folder: str, data: Path, steps: int, eval_every: int, out: Path, system: str) -> dict:
    cfg = pet_trainer.TrainConfig(tier=None, base=folder, data=str(data), max_steps=steps, lora_r=LORA["r"],
                                  lora_alpha=LORA["alpha"], batch_size=1, grad_accum=EXAMPLES_PER_STEP,
                                  max_seq_len=MAX_LEN, eval_every=eval_every, out=str(out), system_prompt=system)
    t0 = time.perf_counter()
    shutil.rmtree(out, ignore_errors=True)  # a run folder appends to its metrics: start clean
    s = pet_trainer.train(cfg, quiet=True)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    curve = [(r.get("train_s", 0.0) if r["step"] else 0.0, r["eval_loss"]) for r in rows
             if r.get("eval_loss") is not None and not r.get("final")]
    return {"name": "PET", "tokens_per_s": s["train_tokens_per_s"], "wall_s": time.perf_counter() - t0,
            "adapter": s["adapter"], "curve": curve, "steps": steps,
            "train_s": max(r.get("train_s", 0.0) for r in rows if not r.get("final")),
            "settings": "batch 1 x 8, bf16 where supported, no checkpointing, lr 2e-4"}


def _trl_rows(train: list[dict], system: str) -> list[dict]:
    """prompt/completion rows: TRL then takes the loss on the completion only, as PET does."""
    rows = []
    for e in train:
        msgs = with_system(e["messages"], system)
        last = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
        rows.append({"prompt": msgs[:last], "completion": [msgs[last]]})
    return rows


def _trl_args(out: Path, steps: int, tuned: bool):
    """TRL's defaults, or (tuned) PET's choices where TRL has them."""
    import torch
    from trl import SFTConfig

    extra = {}
    if tuned:
        extra = dict(gradient_checkpointing=False, padding_free=True, per_device_train_batch_size=4,
                     gradient_accumulation_steps=EXAMPLES_PER_STEP // 4, learning_rate=2e-4,
                     bf16=pet_trainer.cpu_supports_bf16(), max_length=None)  # examples stay under 1024 tokens
    return SFTConfig(output_dir=str(out), max_steps=steps, report_to="none", save_strategy="no",
                     use_cpu=not torch.cuda.is_available(), **extra)


def run_trl(folder: str, train: list[dict], steps: int, eval_every: int, out: Path, system: str, tuned: bool,
            held: HeldOut, before: float) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer, TrainerCallback
    from trl import SFTTrainer

    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = GEMMA3  # the GGUF-derived tokenizer carries none; PET's is what the tier serves
    args = _trl_args(out, steps, tuned)
    trainer = SFTTrainer(model=folder, args=args, train_dataset=Dataset.from_list(_trl_rows(train, system)),
                         processing_class=tok,
                         peft_config=LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], target_modules="all-linear",
                                                task_type="CAUSAL_LM"))
    counts: list[int] = []
    collate = trainer.data_collator

    def counting(features):
        batch = collate(features)
        mask = batch.get("attention_mask")
        counts.append(int(mask.sum()) if mask is not None else int(batch["input_ids"].numel()))
        return batch

    trainer.data_collator = counting
    clock = {"t0": 0.0, "train_s": 0.0, "step_s": [], "curve": [(0.0, before)]}

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            clock["t0"] = time.perf_counter()

        def on_step_end(self, args_, state, control, model=None, **k):
            dt = time.perf_counter() - clock["t0"]
            clock["train_s"] += dt
            clock["step_s"].append(dt)
            if state.global_step % eval_every == 0 or state.global_step == steps:  # not timed as training
                clock["curve"].append((clock["train_s"], held(model)))

    trainer.add_callback(Clock())
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    micro = args.gradient_accumulation_steps
    # steps 2..N: the first step is warm-up, as in PET's own rate (a 1-step run keeps its only step)
    warm = 1 if steps > 1 else 0
    tokens = sum(counts[micro * warm:micro * steps])
    trainer.model.save_pretrained(out / "adapter")
    return {"name": "TRL tuned" if tuned else "TRL defaults", "tokens_per_s": tokens / sum(clock["step_s"][warm:]),
            "wall_s": wall, "adapter": str(out / "adapter"), "curve": clock["curve"], "steps": steps,
            "train_s": clock["train_s"],
            "settings": (f"batch {args.per_device_train_batch_size} x {micro}, lr {args.learning_rate}, "
                         f"gradient checkpointing {args.gradient_checkpointing}, bf16 {args.bf16}, "
                         f"padding_free {args.padding_free}")}


def seconds_to(curve: list[tuple[float, float]], target: float) -> float | None:
    """Training seconds until the held-out loss first reaches target (linear between evaluations)."""
    for (t0, l0), (t1, l1) in zip(curve, curve[1:]):
        if l1 <= target:
            return t1 if l0 == l1 or l0 <= target else t0 + (t1 - t0) * (l0 - target) / (l0 - l1)
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="transformers model folder (default: the enhanced tier's Gemma 3 270M)")
    ap.add_argument("--system-prompt", help="system prompt (default: the enhanced tier's)")
    ap.add_argument("--data", default=str(dataset.SHIPPED))
    ap.add_argument("--steps", type=int, default=12, help="optimizer steps for PET and TRL tuned")
    ap.add_argument("--trl-default-steps", type=int, default=6, help="optimizer steps for TRL defaults (slow)")
    ap.add_argument("--eval-every", type=int, default=3, help="held-out loss every N steps, in every trainer")
    ap.add_argument("--out", default="/tmp/pet-bench-train")
    ap.add_argument("--threads", type=int, help="torch CPU threads for all three (default: torch's own, every core)")
    a = ap.parse_args()
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    folder, system = (a.model, "") if a.model else default_model()
    if a.system_prompt is not None:
        system = a.system_prompt
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    train, held_ex = dataset.split(dataset.read_jsonl(a.data))
    held = HeldOut(folder, held_ex, system)
    before = held.of_adapter(folder, None)
    runs = [run_pet(folder, Path(a.data), a.steps, a.eval_every, out / "pet", system),
            run_trl(folder, train, a.trl_default_steps, a.eval_every, out / "trl-defaults", system, False, held,
                    before),
            run_trl(folder, train, a.steps, a.eval_every, out / "trl-tuned", system, True, held, before)]
    for r in runs:
        r["eval_loss"] = held.of_adapter(folder, r["adapter"])
    pet, defaults, tuned = runs
    # an equal held-out loss that PET and TRL tuned (same learning rate) both reach
    target = max(pet["curve"][-1][1], tuned["curve"][-1][1])
    for r in runs:
        r["seconds_to_target"] = seconds_to(r["curve"], target)
    print(f"model {folder}; {len(train)} train / {len(held_ex)} held-out examples; {EXAMPLES_PER_STEP} examples "
          f"a step; held-out loss before training {before:.4f}")
    for r in runs:
        reach = (f"{r['seconds_to_target']:.0f}s to held-out {target:.4f}" if r["seconds_to_target"] is not None
                 else f"did not reach held-out {target:.4f} in {r['train_s']:.0f}s")
        print(f"{r['name']:<13} {r['steps']:>3} steps {r['tokens_per_s']:8.1f} tokens/s, held-out loss "
              f"{r['eval_loss']:.4f}, {reach} ({r['settings']})")
    summary = {"eval_loss_before": before, "target_loss": target}
    for base, key in ((defaults, "defaults"), (tuned, "tuned")):
        speed = pet["tokens_per_s"] / base["tokens_per_s"]
        delta = (pet["eval_loss"] - base["eval_loss"]) / base["eval_loss"] * 100
        if base["seconds_to_target"] is not None and pet["seconds_to_target"]:
            to_loss = base["seconds_to_target"] / pet["seconds_to_target"]
            loss_txt = f"{to_loss:.2f}x faster to held-out {target:.4f}"
        else:  # the baseline never got there: its whole run is a lower bound
            to_loss = base["train_s"] / pet["seconds_to_target"] if pet["seconds_to_target"] else None
            loss_txt = (f"more than {to_loss:.2f}x faster to held-out {target:.4f} ({base['name']} did not reach it)"
                        if to_loss else "no equal-loss comparison (PET did not reach the target)")
        print(f"PET vs {base['name']}: {speed:.2f}x tokens/s (final held-out loss {delta:+.1f}%), {loss_txt}")
        summary[key] = {"tokens_per_s_ratio": speed, "eval_loss_delta_pct": delta, "time_to_loss_ratio": to_loss,
                        "reached": base["seconds_to_target"] is not None}
    print(json.dumps({**summary, "runs": runs}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
