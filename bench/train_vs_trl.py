"""PET's trainer against a plain TRL SFTTrainer, same model, same data, same number of steps.

    python bench/train_vs_trl.py [--model FOLDER] [--steps 4] [--data data/pet_examples.jsonl]

Both train LoRA r=8 (alpha 16) on all linear layers of the model, on the same train split, seeing the
same number of examples per step (TRL's default batch of 8; PET: batch 1 x 8 accumulation steps).
TRL keeps its defaults otherwise (learning rate, gradient checkpointing, bf16, padding, logging);
only what it needs to run here is set (output_dir, max_steps, no saving, no reporting, CPU).
Prints non-padding training tokens/s for each (the first step left out as warm-up), their ratio,
and each adapter's held-out loss measured the same way (assistant tokens only, PET's template).
Default model: the enhanced tier's Gemma 3 270M (its dequantised folder).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pet import dataset  # noqa: E402
from pet.templates import GEMMA3, BUILTIN, with_system  # noqa: E402
from pet.train import trainer as pet_trainer  # noqa: E402


def default_model() -> tuple[str, str]:
    from pet import models
    from pet.engine import Engine

    eng = Engine()
    spec = eng.tiers.spec("enhanced")
    ref = models.resolve(spec.model, spec.backend, eng.settings.path("models"))
    return models.hf_folder(ref, eng.settings.path("cache", "hf")), spec.system_prompt


def heldout_loss(folder: str, adapter: str | None, held: list[dict], system: str) -> float:
    """Mean loss over the assistant tokens of the held-out examples (bf16 autocast where fast)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    if adapter:
        model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    loss_mod = pet_trainer.make_label_loss(model)
    enc, _ = pet_trainer.encode(held, tok, BUILTIN["gemma3"], system, 1024)
    bf16 = pet_trainer.cpu_supports_bf16()
    tot, cnt = 0.0, 0
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for item in enc:
            ids, mask, labels = pet_trainer.collate([item], tok.pad_token_id or 0)
            s, n = loss_mod(ids, mask, labels)
            tot, cnt = tot + float(s), cnt + int(n)
    return tot / cnt


def run_pet(folder: str, data: Path, steps: int, out: Path, system: str) -> dict:
    cfg = pet_trainer.TrainConfig(tier=None, base=folder, data=str(data), max_steps=steps, lora_r=8, lora_alpha=16,
                                  batch_size=1, grad_accum=8, max_seq_len=1024, eval_every=10**6, out=str(out),
                                  system_prompt=system)
    t0 = time.perf_counter()
    s = pet_trainer.train(cfg, quiet=True)
    return {"tokens_per_s": s["train_tokens_per_s"], "wall_s": time.perf_counter() - t0,
            "adapter": s["adapter"]}


def run_trl(folder: str, train: list[dict], steps: int, out: Path, system: str) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = GEMMA3  # the GGUF-derived tokenizer carries none; PET's is what the tier serves
    rows = []
    for e in train:  # prompt/completion: TRL then takes the loss on the completion only, as PET does
        msgs = with_system(e["messages"], system)
        last = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
        rows.append({"prompt": msgs[:last], "completion": [msgs[last]]})
    ds = Dataset.from_list(rows)
    args = SFTConfig(output_dir=str(out), max_steps=steps, report_to="none", save_strategy="no",
                     use_cpu=not torch.cuda.is_available())
    trainer = SFTTrainer(model=folder, args=args, train_dataset=ds, processing_class=tok,
                         peft_config=LoraConfig(r=8, lora_alpha=16, target_modules="all-linear",
                                                task_type="CAUSAL_LM"))
    counts, ends = [], []
    collate = trainer.data_collator

    def counting(features):
        batch = collate(features)
        mask = batch.get("attention_mask")
        counts.append(int(mask.sum()) if mask is not None else int(batch["input_ids"].numel()))
        return batch

    trainer.data_collator = counting

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            if not ends:
                ends.append(time.perf_counter())

        def on_step_end(self, *a, **k):
            ends.append(time.perf_counter())

    trainer.add_callback(Clock())
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    # steps 2..N: the first step is warm-up, as in PET's own tokens/s
    tokens = sum(counts[1:steps])
    seconds = ends[-1] - ends[1]
    trainer.model.save_pretrained(out / "adapter")
    return {"tokens_per_s": tokens / seconds, "wall_s": wall, "adapter": str(out / "adapter"),
            "gradient_checkpointing": args.gradient_checkpointing, "bf16": args.bf16,
            "batch_size": args.per_device_train_batch_size, "learning_rate": args.learning_rate}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="transformers model folder (default: the enhanced tier's Gemma 3 270M)")
    ap.add_argument("--system-prompt", help="system prompt (default: the enhanced tier's)")
    ap.add_argument("--data", default=str(dataset.SHIPPED))
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--out", default="/tmp/pet-bench-train")
    a = ap.parse_args()
    folder, system = (a.model, a.system_prompt or "") if a.model else default_model()
    if a.system_prompt is not None:
        system = a.system_prompt
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    train, held = dataset.split(dataset.read_jsonl(a.data))
    before = heldout_loss(folder, None, held, system)
    pet = run_pet(folder, Path(a.data), a.steps, out / "pet", system)
    trl = run_trl(folder, train, a.steps, out / "trl", system)
    pet["eval_loss"] = heldout_loss(folder, pet["adapter"], held, system)
    trl["eval_loss"] = heldout_loss(folder, trl["adapter"], held, system)
    ratio = pet["tokens_per_s"] / trl["tokens_per_s"]
    worse = (pet["eval_loss"] - trl["eval_loss"]) / trl["eval_loss"] * 100
    print(f"model {folder}, {a.steps} steps of 8 examples, {len(train)} train / {len(held)} held-out examples")
    print(f"held-out loss before training: {before:.4f}")
    print(f"PET : {pet['tokens_per_s']:8.1f} non-padding tokens/s, held-out loss {pet['eval_loss']:.4f}, "
          f"wall {pet['wall_s']:.0f}s")
    print(f"TRL : {trl['tokens_per_s']:8.1f} non-padding tokens/s, held-out loss {trl['eval_loss']:.4f}, "
          f"wall {trl['wall_s']:.0f}s (defaults: batch {trl['batch_size']}, lr {trl['learning_rate']}, "
          f"gradient checkpointing {trl['gradient_checkpointing']}, bf16 {trl['bf16']})")
    print(f"speed ratio PET/TRL: {ratio:.2f}x (goal >= 1.5); PET held-out loss {worse:+.1f}% vs TRL (goal <= +2%)")
    print(json.dumps({"ratio": ratio, "pet": pet, "trl": trl, "eval_loss_before": before, "loss_delta_pct": worse}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
