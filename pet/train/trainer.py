"""The training child: LoRA on a causal LM, writing everything to its run folder.

`python -m pet train ...` runs this in the foreground; the Train tab starts the same command as a
subprocess (pet/train/jobs.py) and reads the folder. A run folder holds:
  config.json, metrics.jsonl (one JSON line per optimizer step, then a final line), train.log,
  status.json (running/finished/failed/cancelled + pid), data_sha256, final_eval.json,
  adapter/ (PEFT files + pet_adapter.json with the base model's identity).

Why a hand-written loop and not transformers' Trainer/TRL: what makes LoRA fast on a CPU here is
(1) logits only where a loss is taken (Gemma 3's LM head over a 262k vocabulary costs more than
all its layers), (2) bf16 autocast on CPUs with avx512_bf16 (about 2x fp32), (3) no gradient
checkpointing and length-grouped batches (little padding). A Trainer with a custom compute_loss
can do (1)-(3) too; the loop is used because cancel-and-keep-the-adapter, held-out loss before the
first step, keep-best and early stopping are a few plain lines here instead of callbacks around
Trainer's own checkpointing. It stays on `accelerate` (Accelerator), so `accelerate launch`
spreads it over several GPUs unchanged; bench/train_vs_trl.py measures it against TRL's defaults.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import secrets
import shutil
import signal
import sys
import time
import traceback
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

from pet import PetError
from pet.dataset import MAX_SEQ_LEN
from pet.files import atomic_folder, write_atomic
from pet.train import checkpoint
from pet.train.progress import EvalClock, Progress

IGNORE = -100
RUN_FILES = ("config.json", "metrics.jsonl", "train.log", "status.json", "data_sha256", "final_eval.json", "adapter",
             "checkpoint", "model", "model.gguf")
LORA_LR, FULL_LR = 2e-4, 2e-5
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
log = logging.getLogger("pet.train")


def _f(default, help: str, flag: str | None = None, **meta):
    return field(default=default, metadata={"help": help, "flag": flag, **meta})


@dataclass
class TrainConfig:
    """Everything a run needs; the CLI flags and the Train tab's explanations come from these fields."""

    tier: str | None = _f("enhanced", "tier whose model, chat template and system prompt to train on")
    base: str | None = _f(None, "model to train instead of a tier's (a folder, a .gguf file or a hub id)")
    data: str | None = _f(None, "examples file (.jsonl with {\"messages\": [...]}); default: the latest saved "
                                "dataset version (see --version)")
    epochs: float = _f(2.0, "passes over the training split (ignored when max_steps is set)")
    max_steps: int | None = _f(None, "stop after this many optimizer steps")
    lora_r: int = _f(16, "LoRA rank: the adapter's capacity; 8-32 is typical")
    lora_alpha: int = _f(32, "LoRA scale numerator: the update is scaled by alpha/r (2x r is a common choice)")
    lora_dropout: float = _f(0.05, "dropout on the LoRA input during training, against overfitting small data")
    target_modules: str = _f(",".join(ALL_LINEAR), "comma-separated linear layers that get LoRA (all linear layers of a block by default)")
    lr: float | None = _f(None, "peak learning rate (linear warm-up, then linear decay); default 2e-4 for LoRA, "
                                "2e-5 for --method full")
    warmup_ratio: float = _f(0.05, "fraction of steps spent warming the learning rate up")
    batch_size: int = _f(1, "examples per forward pass (on a 2-core CPU 1 was fastest per token; GPUs like more)")
    grad_accum: int = _f(4, "forward passes per optimizer step (effective batch = batch_size x grad_accum)")
    max_seq_len: int = _f(MAX_SEQ_LEN, "longest tokenised conversation kept, the tier's system prompt included "
                                        "(the Data tab warns against the same number); longer ones are truncated")
    seed: int = _f(0, "random seed for LoRA init, shuffling and dropout")
    eval_every: int | None = _f(None, "held-out loss every N steps (default: about 8 times per run)")
    early_stop: int | None = _f(None, "stop when the held-out loss has not improved for N evaluations")
    end_weight: float = _f(5.0, "loss weight on the end-of-turn marker: a base model never produced it, so at "
                                "weight 1 it is learnt slowly and the tuned model runs on past its answer")
    keep_best: bool = _f(False, "keep the adapter from the step with the lowest held-out loss")
    method: str = _f("lora", "lora: train a small adapter (what PET ships); full: train every weight but the token "
                             "embeddings, then write a GGUF and extract an adapter with `python -m pet export lora`")
    train_embeddings: bool = _f(False, "with --method full, train the token embeddings too (off by default: with "
                                       "Gemma 3's 262k vocabulary they are 60% of the weights and tied to the output)")
    save_every: int | None = _f(None, "also save a checkpoint (weights, optimizer) every N steps; one is always saved "
                                      "at each evaluation and on cancel, so `--resume RUN_ID` can continue")
    device: str = _f("auto", "auto, cpu or cuda (cuda uses unsloth 4-bit QLoRA when it is installed)")
    precision: str = _f("auto", "auto (bf16 where the hardware supports it, else fp32), bf16 or fp32")
    init_adapter: str | None = _f(None, "continue training this PEFT adapter (same base) instead of a fresh LoRA")
    out: str | None = _f(None, "run folder (default: PET_HOME/runs/<run_id>)")
    system_prompt: str | None = _f(None, "system prompt for examples without one (default: the tier's)")

    def problems(self) -> list[str]:
        p = []
        checks = [
            # Upper bounds too: an absurd value (1e9 epochs, inf) is refused here, naming the range,
            # instead of running for ever or overflowing somewhere deep in the loop.
            ("epochs", 0 < self.epochs <= 1000, "must be between 0 (exclusive) and 1000"),
            ("max_steps", self.max_steps is None or 0 < self.max_steps <= 10_000_000,
             "must be between 1 and 10,000,000"),
            ("lora_r", 0 < self.lora_r <= 1024, "must be between 1 and 1024"),
            ("end_weight", 0 < self.end_weight <= 100, "must be between 0 (exclusive) and 100"),
            ("lora_alpha", 0 < self.lora_alpha <= 16384, "must be between 1 and 16384"),
            ("lora_dropout", 0 <= self.lora_dropout < 1, "must be in [0, 1)"),
            ("lr", self.lr is None or 0 < self.lr <= 1, "must be in (0, 1]"),
            ("method", self.method in ("lora", "full"), "must be lora or full"),
            ("save_every", self.save_every is None or self.save_every > 0, "must be > 0"),
            ("warmup_ratio", 0 <= self.warmup_ratio < 1, "must be in [0, 1)"),
            ("batch_size", 0 < self.batch_size <= 1024, "must be between 1 and 1024"),
            ("grad_accum", 0 < self.grad_accum <= 1024, "must be between 1 and 1024"),
            ("max_seq_len", 16 <= self.max_seq_len <= 131072, "must be between 16 and 131072"),
            ("seed", 0 <= self.seed < 2**31, "must be between 0 and 2^31-1"),
            ("eval_every", self.eval_every is None or 0 < self.eval_every <= 10_000_000,
             "must be between 1 and 10,000,000 steps"),
            ("early_stop", self.early_stop is None or 0 < self.early_stop <= 10_000,
             "must be between 1 and 10,000 evaluations"),
            ("device", self.device in ("auto", "cpu", "cuda"), "must be auto, cpu or cuda"),
            ("precision", self.precision in ("auto", "bf16", "fp32"), "must be auto, bf16 or fp32"),
            ("target_modules", bool(self.modules()), "name at least one linear layer, e.g. q_proj,v_proj"),
        ]
        for name, ok, why in checks:
            if not ok:
                p.append(f"{name}: {why}, got {getattr(self, name)!r}")
        if self.tier and self.base:
            p.append("tier/base: give one of them, not both")
        if self.method == "full" and self.init_adapter:
            p.append("init_adapter: continues a LoRA; it cannot start a --method full run")
        if self.train_embeddings and self.method != "full":
            p.append("train_embeddings: only with --method full")
        return p

    def peak_lr(self) -> float:
        # Full fine-tuning moves every weight: ten times LoRA's rate overshoots within a few steps.
        return self.lr if self.lr is not None else (LORA_LR if self.method == "lora" else FULL_LR)

    def modules(self) -> list[str]:
        return [m.strip() for m in str(self.target_modules).split(",") if m.strip()]

    # The run's length, in one place: the trainer and the Train tab's estimate (pet/train/jobs.py) use these.
    def steps_per_epoch(self, n_examples: int, processes: int = 1) -> int:
        """Optimizer steps in one pass: batches of batch_size, shared among the processes (each takes every
        n-th batch), grad_accum batches to a step."""
        return math.ceil(math.ceil(n_examples / self.batch_size) / processes / self.grad_accum)

    def total_steps(self, n_examples: int, processes: int = 1) -> int:
        return self.max_steps or max(1, math.ceil(self.steps_per_epoch(n_examples, processes) * self.epochs))

    def eval_interval(self, total_steps: int) -> int:
        """A held-out loss every this many steps: --eval-every, or about 8 times per run."""
        return self.eval_every or max(1, total_steps // 8)

    def check(self) -> TrainConfig:
        p = self.problems()
        if p:
            raise PetError("bad training settings:\n" + "\n".join(f"  - {x}" for x in p))
        return self


def config_fields():
    return [f for f in fields(TrainConfig)]


# -- data ------------------------------------------------------------------------------------------
def label_tokens(tokenizer, text: str, spans: list[tuple[int, int]], max_len: int) -> tuple[list[int], list[int]]:
    """Token ids of a rendered conversation and labels that keep only tokens inside the assistant spans.

    A token is trained on when it starts inside a span (character offsets from the fast tokenizer),
    so the loss covers exactly the assistant text and its end-of-turn marker.
    """
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])[:max_len]
    labels = []
    for tok, (start, _end) in zip(ids, enc["offset_mapping"]):
        inside = any(s <= start < e for s, e in spans)
        labels.append(tok if inside else IGNORE)
    return ids, labels


def encode(examples: list[dict], tokenizer, template, system: str | None, max_len: int):
    """Render each example exactly as the tier serves it (its template, its system prompt) and label it."""
    from pet.templates import with_system

    out, dropped = [], 0
    for ex in examples:
        text, spans = template.training_text(with_system(ex["messages"], system))
        ids, labels = label_tokens(tokenizer, text, spans, max_len)
        if all(x == IGNORE for x in labels[1:]):
            dropped += 1  # nothing left to learn after truncation
            continue
        out.append((ids, labels))
    return out, dropped


def length_grouped_batches(n_items: int, lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffle, then sort within windows of 16 batches so a batch holds similar lengths (little padding)."""
    idx = list(range(n_items))
    rng.shuffle(idx)
    window = batch_size * 16
    batches = []
    for w in range(0, len(idx), window):
        chunk = sorted(idx[w:w + window], key=lambda i: lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def collate(items, pad_id: int):
    import torch

    width = max(len(ids) for ids, _ in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, (i, lab) in enumerate(items):
        ids[row, :len(i)] = torch.tensor(i)
        labels[row, :len(lab)] = torch.tensor(lab)
        mask[row, :len(i)] = 1
    return ids, mask, labels


# -- model -------------------------------------------------------------------------------------------
def cpu_supports_bf16() -> bool:
    """bf16 matmuls are fast only with avx512_bf16 or AMX; elsewhere bf16 autocast is slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def make_label_loss(causal_lm, end_ids: tuple[int, ...] = (), end_weight: float = 1.0):
    """A Module: summed cross-entropy over label positions, with the LM head applied only there.

    In training, the end-of-turn tokens (`end_ids`) weigh `end_weight`: it is one token in a few
    hundred, and in Gemma 3's base vocabulary its embedding nearly coincides with unused tokens
    (cosine ~0.995), so at weight 1 the tuned model emits those instead and never stops. Evaluation
    is always plain cross-entropy, so held-out losses stay comparable across settings.
    A Module (not a function) so DistributedDataParallel wraps the whole forward under `accelerate launch`.
    """
    import torch
    import torch.nn.functional as F

    class _LabelLoss(torch.nn.Module):
        def __init__(self, lm):
            super().__init__()
            self.lm = lm

        def forward(self, input_ids, attention_mask, labels):
            inner = self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm
            body, head = inner.get_decoder(), inner.get_output_embeddings()
            hidden = body(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
            target = labels[:, 1:]
            keep = target != IGNORE
            h = hidden[:, :-1][keep]
            logits = head(h).float()
            text_cfg = inner.config.get_text_config() if hasattr(inner.config, "get_text_config") else inner.config
            cap = getattr(text_cfg, "final_logit_softcapping", None)  # Gemma 2 and 3n cap their logits
            if cap:
                logits = torch.tanh(logits / cap) * cap
            tgt = target[keep]
            if self.training and end_ids and end_weight != 1.0:
                per = F.cross_entropy(logits, tgt, reduction="none")
                w = torch.where(torch.isin(tgt, torch.tensor(end_ids, device=tgt.device)), end_weight, 1.0)
                return (per * w).sum(), keep.sum()
            loss = F.cross_entropy(logits, tgt, reduction="sum")
            return loss, keep.sum()

    return _LabelLoss(causal_lm)


def end_token_ids(tokenizer, template) -> tuple[int, ...]:
    """Ids of the template's end-of-turn markers that the tokenizer knows as single tokens."""
    ids = []
    for s in template.stop:
        enc = tokenizer(s, add_special_tokens=False)["input_ids"]
        if len(enc) == 1:
            ids.append(enc[0])
    return tuple(ids)


def pick_device(want: str) -> str:
    import torch

    if want == "cuda" and not torch.cuda.is_available():
        raise PetError("--device cuda: CUDA is not available here (torch.cuda.is_available() is False); "
                       "use --device cpu or --device auto, or install a CUDA build of torch")
    if want == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return want


def load_model(folder: str, cfg: TrainConfig, device, use_bf16: bool):
    """The base model with fresh LoRA layers (CUDA + unsloth: 4-bit QLoRA; otherwise plain PEFT), or for
    --method full the whole model with its trainable weights in fp32."""
    import importlib.util

    import torch

    if cfg.method == "full":
        return load_full_model(folder, cfg, device, use_bf16)
    if str(device).startswith("cuda") and importlib.util.find_spec("unsloth") is not None:
        from unsloth import FastLanguageModel  # imported only here: it patches transformers on import

        model, _tok = FastLanguageModel.from_pretrained(folder, max_seq_length=cfg.max_seq_len, load_in_4bit=True,
                                                        dtype=None)
        model = FastLanguageModel.get_peft_model(model, r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                                                 lora_dropout=cfg.lora_dropout, target_modules=cfg.modules(),
                                                 bias="none", use_gradient_checkpointing="unsloth",
                                                 random_state=cfg.seed)
        return model, "unsloth-qlora-4bit"
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    # Frozen base weights in bf16 when bf16 is in use: autocast would otherwise re-cast every weight
    # on every step. The LoRA weights stay fp32 (PEFT keeps adapter dtype), so updates keep precision.
    dtype = torch.bfloat16 if use_bf16 else torch.float32
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, attn_implementation="sdpa")
    model.to(device)
    if cfg.init_adapter:
        from peft import PeftModel

        return (PeftModel.from_pretrained(model, cfg.init_adapter, is_trainable=True),
                f"peft-lora-{'bf16' if use_bf16 else 'fp32'}")
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [m for m in cfg.modules() if m not in names]
    if missing:
        raise PetError(f"--target-modules: {', '.join(missing)} not found in this model; "
                       f"it has e.g. {', '.join(sorted(n for n in names if n.endswith('proj'))[:8])}")
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.modules(), bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, lora), f"peft-lora-{'bf16' if use_bf16 else 'fp32'}"


def load_full_model(folder: str, cfg: TrainConfig, device, use_bf16: bool):
    """Every weight trains in fp32 (bf16 master weights would round most small updates away), under bf16
    autocast where that is fast, except the token embeddings unless --train-embeddings.

    Why freeze the embeddings: in Gemma 3 270M they are 168M of the 268M weights (a 262k vocabulary x
    640), tied to the output layer. Training them would more than double the optimizer's memory, make
    every step update a 262k x 640 matrix densely, and let a few hundred examples move the output
    distribution of tokens they never contain. The layers hold the behaviour a narrow task needs.
    """
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="sdpa")
    model.to(device)
    if not cfg.train_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    return model, f"full-{'bf16' if use_bf16 else 'fp32'}"


# -- the run folder ----------------------------------------------------------------------------------
def write_json(path: Path, obj) -> None:
    """A run folder's JSON file (config, status, final evaluation), written atomically (pet/files.py)."""
    write_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False))


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


class RunFolder:
    def __init__(self, path: Path, main: bool = True):
        self.path = path
        self.main = main
        path.mkdir(parents=True, exist_ok=True)

    def status(self, state: str, **extra) -> None:
        if self.main:
            cur = {}
            try:
                cur = json.loads((self.path / "status.json").read_text())
            except (OSError, ValueError):
                pass
            cur.update(state=state, pid=os.getpid(), updated=time.time(), **extra)
            write_json(self.path / "status.json", cur)

    def metric(self, **row) -> None:
        if self.main:
            with open(self.path / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")

    def phase(self, name: str, detail: str | None = None, **extra) -> None:
        """What the run is doing now (loading, converting, evaluating, training, checkpointing, saving)."""
        log.info("%s%s", name, f": {detail}" if detail else "")
        self.status("running", phase=name, phase_detail=detail, phase_done=None, phase_total=None, **extra)

    def truncate_metrics(self, step: int) -> None:
        """Drop the lines a killed run wrote after its checkpoint: the resumed run writes them again."""
        if not self.main:
            return
        rows = []
        try:
            with open(self.path / "metrics.jsonl", encoding="utf-8") as f:
                for line in f:
                    try:
                        row = json.loads(line)
                    except ValueError:
                        continue  # the line being written when the run was killed
                    if row.get("step", 0) <= step and not row.get("final"):
                        rows.append(row)
        except OSError:
            pass
        write_atomic(self.path / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


# -- the run -----------------------------------------------------------------------------------------
class Stop:
    """Set by SIGTERM/SIGINT: the loop finishes its current forward/backward, saves and exits."""

    requested = False

    @classmethod
    def install(cls) -> None:
        def handler(signum, frame):
            cls.requested = True
            log.info("stop requested (signal %s): saving the adapter and exiting", signum)

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


def resolve_source(cfg: TrainConfig, on_convert=None):
    """(transformers folder, base identity, template, system prompt, label, GGUF file or None) for a tier
    or --base. `on_convert` is called before a GGUF is dequantised into the cache (a slow first time)."""
    from pet import models, templates
    from pet.adapters import base_identity
    from pet.config import Settings

    settings = Settings.from_env()
    models_dir, cache = settings.path("models"), settings.path("cache", "hf")
    if cfg.base:
        backend = "hf"
        ref = models.resolve(cfg.base, backend, models_dir)
        ident_ref = str(ref.path.resolve()) if ref.kind == "folder" else ref.ref
        folder = models.hf_folder(ref, cache, on_convert=on_convert)
        from transformers import AutoConfig, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(folder)
        arch = getattr(AutoConfig.from_pretrained(folder), "model_type", None)
        template = templates.choose(None, tok.chat_template, arch, tok.bos_token or "", tok.eos_token or "")
        system = cfg.system_prompt or ""
        return folder, base_identity(ident_ref, ref.path), template, system, cfg.base, _gguf_file(ref)
    from pet.engine import Engine

    eng = Engine(settings)
    spec = eng.tiers.spec(cfg.tier)
    if spec.backend in ("ollama", "openai"):
        raise PetError(f"tier {cfg.tier!r} runs on a model server ({spec.backend}), whose weights PET cannot train: "
                       "use --base with a Hugging Face id or a local model folder")
    ref = models.resolve(spec.model, spec.backend, models_dir)
    folder = models.hf_folder(ref, cache, on_convert=on_convert)
    system = spec.system_prompt if cfg.system_prompt is None else cfg.system_prompt
    return (folder, base_identity(ref.ref, ref.path), eng.template_for(cfg.tier), system, f"tier {cfg.tier}",
            _gguf_file(ref))


def _gguf_file(ref) -> str | None:
    """The base's GGUF file, if it came from one: a full run's GGUF copies its tokenizer from it."""
    return str(ref.path) if ref.path is not None and ref.path.suffix == ".gguf" else None


def read_split(cfg: TrainConfig):
    """The --data file (default: the shipped examples), checked, as (path, train split, held-out split)."""
    from pet import dataset

    path = Path(cfg.data) if cfg.data else dataset.SHIPPED
    if not path.exists():
        raise PetError(f"--data: {path} not found; give a .jsonl file of {{\"messages\": [...]}} examples")
    try:
        examples = dataset.read_jsonl(path)
    except (ValueError, UnicodeDecodeError) as e:
        raise PetError(f"--data: {path} is not valid JSON lines ({e})")
    bad = [i + 1 for i, e in enumerate(examples)
           if not isinstance(e, dict) or not isinstance(e.get("messages"), list)
           or not any(isinstance(m, dict) and m.get("role") == "assistant" for m in e["messages"])]
    if bad:
        raise PetError(f"--data: {path}: row(s) {', '.join(map(str, bad[:20]))} have no \"messages\" list with an "
                       "assistant turn to learn from")
    train, held = dataset.split(examples)
    if not train or not held:
        raise PetError(f"--data: {path}: {len(train)} training and {len(held)} held-out examples; "
                       "need at least one of each (about 1 in 10 examples is held out by a stable hash)")
    return path, train, held


def train(cfg: TrainConfig, run_dir: Path | None = None, quiet: bool = False, resume: bool = False) -> dict:
    """Run one training job to completion (or cancellation) and return the summary.

    With resume, `run_dir` is an interrupted run and `cfg` its own settings: it goes on from its checkpoint.
    """
    cfg.check()
    Stop.install()  # first: a cancel that arrives while torch imports still ends as "cancelled"
    from pet.config import Settings

    run_dir = Path(run_dir or cfg.out or Settings.from_env().path("runs") / new_run_id())
    # Under `accelerate launch` only rank 0 writes the folder; RANK is set before any import.
    main = os.environ.get("RANK", "0") == "0"
    run = RunFolder(run_dir, main=main)
    handlers = [logging.FileHandler(run_dir / "train.log", encoding="utf-8")] if main else []
    if not quiet:
        handlers.append(logging.StreamHandler(sys.stderr))
    for h in handlers:
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        log.addHandler(h)
    log.setLevel(logging.INFO)
    if resume:
        run.status("running", resumed=time.time(), error=None, phase="loading", phase_detail="resuming")
    else:
        run.status("running", started=time.time(), phase="loading")
    try:
        import torch
        from accelerate import Accelerator

        if os.environ.get("PET_TRAIN_THREADS"):  # the job's share of the CPU (pet/train/jobs.py child_env)
            from pet.config import ThreadBudget

            torch.set_num_threads(ThreadBudget.from_env().train)
            log.info("using %d CPU threads (PET_TRAIN_THREADS)", torch.get_num_threads())
        device = pick_device(cfg.device)
        acc = Accelerator(cpu=device == "cpu")
        summary = _train(cfg, run, acc, device, torch, resume=resume)
    except BaseException as e:
        msg = str(e) if isinstance(e, PetError) else f"{type(e).__name__}: {e}"
        log.error("run failed: %s", msg)
        if not isinstance(e, PetError):
            log.error("%s", traceback.format_exc())
        run.status("failed", error=msg, finished=time.time(), phase=None)
        raise
    finally:
        for h in handlers:
            log.removeHandler(h)
            h.close()
    return summary


def resume(ref: str, quiet: bool = False) -> dict:
    """Continue an interrupted, cancelled or failed run from its last checkpoint, with its own settings."""
    from pet.config import Settings
    from pet.train import checkpoint

    run_dir = checkpoint.find_run(ref, Settings.from_env().path("runs"))
    checkpoint.check_resumable(run_dir)
    status = json.loads((run_dir / "status.json").read_text(encoding="utf-8"))
    pid = status.get("pid")
    if status.get("state") in ("starting", "running") and pid and pid != os.getpid() and _pid_alive(pid):
        raise PetError(f"--resume: run {run_dir.name} is still running (pid {pid}); cancel it first")
    saved = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    cfg = TrainConfig(**{f.name: saved[f.name] for f in fields(TrainConfig) if f.name in saved})
    return train(cfg, run_dir, quiet=quiet, resume=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        return b"train" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True


# -- the run, in phases: prepare the data, build the model, then the loop of steps with its evaluations
# and checkpoints, and finish. _train below reads as that list; each phase is a function or a method.
@dataclass
class TrainData:
    """prepare_data's result: the examples split and tokenised as the tier serves them, and what they train."""

    path: Path
    train_ex: list[dict]
    held_ex: list[dict]
    train_set: list  # (ids, labels) of each example that kept some of its answer
    held_set: list
    dropped: int
    held_dropped: int
    sha: str  # of the training split: a resume refuses other examples
    tok: Any
    folder: str  # the model's transformers folder
    base: dict  # the base model's identity, recorded with the adapter
    template: Any
    system: str
    label: str  # "tier enhanced" or the --base given
    model_file: str | None  # the base's GGUF, when it came from one


def prepare_data(cfg: TrainConfig, run: RunFolder, resume: bool) -> TrainData:
    """Read and split the examples, find the model, and tokenise both splits with its template and system
    prompt; refuse here, before any model loads, what would waste the run."""
    from pet import dataset

    run.phase("loading", "reading the examples")
    path, train_ex, held_ex = read_split(cfg)
    folder, base, template, system, label, model_file = resolve_source(
        cfg, on_convert=lambda: run.phase("converting", "dequantising the GGUF into a transformers folder "
                                                        "(once per model; it is cached)"))
    from transformers import AutoTokenizer

    run.phase("loading", "tokenising the examples")
    tok = AutoTokenizer.from_pretrained(folder)
    if not getattr(tok, "is_fast", False):
        raise PetError(f"{folder}: the trainer needs a fast tokenizer (tokenizer.json) for character offsets")
    train_set, dropped = encode(train_ex, tok, template, system, cfg.max_seq_len)
    held_set, held_dropped = encode(held_ex, tok, template, system, cfg.max_seq_len)
    if not train_set:
        raise PetError(f"--max-seq-len {cfg.max_seq_len}: every example was truncated before its answer; raise it")
    if not held_set:  # checked before any work is spent: keep-best and early stopping need a held-out loss
        why = (f"none of the {len(held_ex)} held-out examples keeps any of its answer within --max-seq-len "
               f"{cfg.max_seq_len} (the system prompt counts too)")
        if cfg.keep_best or cfg.early_stop:
            raise PetError(f"{why}, so --keep-best/--early-stop have no held-out loss to go by: raise --max-seq-len "
                           "or leave those flags out")
        log.warning("%s: training without evaluation (no held-out loss; raise --max-seq-len to get one)", why)
    sha = dataset.examples_sha256(train_ex)
    if resume:
        old = (run.path / "data_sha256").read_text().strip() if (run.path / "data_sha256").exists() else sha
        if old != sha:
            raise PetError(f"--resume: the examples changed since run {run.path.name} started (its data sha256 "
                           f"{old[:12]}, now {sha[:12]}): start a new run on the new examples")
    return TrainData(path, train_ex, held_ex, train_set, held_set, dropped, held_dropped, sha, tok, folder, base,
                     template, system, label, model_file)


def wants_bf16(cfg: TrainConfig, device: str, torch) -> bool:
    """bf16 autocast when asked, or by default where the hardware makes it fast."""
    return cfg.precision == "bf16" or (cfg.precision == "auto" and (
        torch.cuda.is_bf16_supported() if device == "cuda" else cpu_supports_bf16()))


def continue_adapter(cfg: TrainConfig, base: dict) -> None:
    """--init-adapter: the adapter must belong to this base, and its r, alpha and layers rule (set on cfg)."""
    from pet.adapters import check_base, read_adapter

    init = read_adapter(cfg.init_adapter)
    check_base(init, base)
    peft_cfg = json.loads((init.path / "adapter_config.json").read_text(encoding="utf-8"))
    cfg.lora_r, cfg.lora_alpha = int(peft_cfg["r"]), int(peft_cfg["lora_alpha"])
    cfg.target_modules = ",".join(sorted(peft_cfg["target_modules"]))
    log.info("continuing adapter %s (r=%d, alpha=%d)", init.path, cfg.lora_r, cfg.lora_alpha)


def record_config(cfg: TrainConfig, run: RunFolder, acc, data: TrainData, device: str, use_bf16: bool,
                  resume: bool) -> None:
    """config.json (the settings and what they resolved to) and data_sha256; a resumed run keeps its own."""
    config = {**asdict(cfg), "resolved": {
        "source": data.label, "model_folder": data.folder, "model_file": data.model_file, "base": data.base,
        "template": data.template.name, "system_prompt": data.system, "data_path": str(data.path),
        "train_examples": len(data.train_ex), "heldout_examples": len(data.held_ex),
        "dropped_examples": data.dropped, "heldout_dropped": data.held_dropped, "evaluation": bool(data.held_set),
        "device": device, "precision": "bf16" if use_bf16 else "fp32", "lr": cfg.peak_lr(),
        "world_size": acc.num_processes}}
    if acc.is_main_process and not resume:
        write_json(run.path / "config.json", config)
        write_atomic(run.path / "data_sha256", data.sha + "\n")
    log.info("data %s: %d train, %d held-out examples (%d dropped: no answer left after truncation); sha256 %s",
             data.path, len(data.train_ex), len(data.held_ex), data.dropped, data.sha[:16])


@dataclass
class BuiltModel:
    model: Any
    method: str  # what trains, e.g. peft-lora-bf16, full-fp32, unsloth-qlora-4bit
    params: dict  # the trainable weights by name, in fp32
    opt: Any
    loss_mod: Any


def build_model(cfg: TrainConfig, run: RunFolder, acc, data: TrainData, device: str, use_bf16: bool,
                torch) -> BuiltModel:
    """The model with its trainable weights in fp32, the optimizer, and the loss module that trains it."""
    run.phase("loading", "loading the model")
    model, method = load_model(data.folder, cfg, acc.device, use_bf16)  # cuda:<local rank> under accelerate
    log.info("model %s (%s) from %s, %s on %s", data.label, method, data.folder, "bf16" if use_bf16 else "fp32",
             device)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    for p in params.values():  # trainable weights stay fp32 even when the frozen base is bf16
        p.data = p.data.float()
    n_trained, n_all = sum(p.numel() for p in params.values()), sum(p.numel() for p in model.parameters())
    log.info("training %d of %d weights (%.1f%%)", n_trained, n_all, 100.0 * n_trained / max(1, n_all))
    opt = torch.optim.AdamW(list(params.values()), lr=cfg.peak_lr(), weight_decay=0.0)
    loss_mod = make_label_loss(model, end_token_ids(data.tok, data.template), cfg.end_weight)
    return BuiltModel(model, method, params, opt, loss_mod)


def lr_schedule(torch, opt, total: int, warmup: int):
    """Linear warm-up over `warmup` steps, then linear decay to 0 at `total`."""
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / (warmup + 1) if s < warmup else max(0.0, (total - s) / max(1, total - warmup)))


# -- the checkpoint phase: what --resume needs, and putting it back ----------------------------------------
PROGRESS_KEYS = ("step_times", "first_step", "eval_s", "eval_tok_s", "train_tok_s")


@dataclass
class LoopState:
    """Where the run is: what the loop advances, a checkpoint stores and --resume restores."""

    step: int = 0
    # (epoch, optimizer steps done in it, the batch order's random state at its start): a resume
    # rebuilds that epoch's batches and skips the steps already done.
    position: tuple = (0, 0, None)
    torch_rng: Any = None  # torch's random state after the last completed step (dropout)
    evals: list = field(default_factory=list)  # (step, held-out loss); step 0 is the starting point
    best_loss: float | None = None
    best_step: int = 0
    best_weights: dict | None = None  # kept only with --keep-best
    since_best: int = 0  # evaluations without improvement, for --early-stop
    before: float | None = None  # the held-out loss before training
    warm_tokens: int = 0  # tokens and seconds of every step but the first: the speed reported
    warm_time: float = 0.0
    seen_tokens: int = 0  # tokens and seconds of every step (evaluations left out)
    train_s: float = 0.0
    stopped_early: bool = False


def checkpoint_state(s: LoopState, opt, sched, sha: str, prog) -> dict:
    return {"step": s.step, "epoch": s.position[0], "groups_done": s.position[1], "epoch_rng": s.position[2],
            "torch_rng": s.torch_rng, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "evals": s.evals, "best": (s.best_loss, s.best_step), "since_best": s.since_best, "before": s.before,
            "warm": (s.warm_tokens, s.warm_time), "seen": (s.seen_tokens, s.train_s), "data_sha256": sha,
            "progress": {k: v for k, v in prog.__dict__.items() if k in PROGRESS_KEYS}}


def save_checkpoint(run: RunFolder, params: dict, opt, sched, s: LoopState, sha: str, prog, total: int) -> None:
    """Weights, optimizer, scheduler and the loop's state, swapped in whole (pet/train/checkpoint.py)."""
    run.phase("checkpointing", f"saving weights and optimizer at step {s.step}", step=s.step, total_steps=total)
    checkpoint.save(run.path, params, s.best_weights, checkpoint_state(s, opt, sched, sha, prog))


def load_checkpoint(run: RunFolder, params: dict, opt, torch) -> tuple[dict, dict | None]:
    """--resume, before accelerate wraps the model: the checkpoint's weights and optimizer state go back in.
    Returns its state (for restored_state and the scheduler) and the keep-best weights."""
    weights, best_weights, ck = checkpoint.load(run.path)
    if set(weights) != set(params):
        raise PetError(f"--resume: the checkpoint of run {run.path.name} does not match this model's trainable "
                       "weights (was the base model changed?); start a new run")
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(weights[n].to(p.device))
    opt.load_state_dict(ck["optimizer"])
    return ck, best_weights


def restored_state(ck: dict, best_weights: dict | None, params: dict, keep_best: bool) -> LoopState:
    seen_tokens, train_s = ck.get("seen", (0, 0.0))  # checkpoints from before these counters: from 0
    return LoopState(
        step=ck["step"], position=(ck["epoch"], ck["groups_done"], ck["epoch_rng"]), torch_rng=ck["torch_rng"],
        evals=[tuple(e) for e in ck["evals"]], best_loss=ck["best"][0], best_step=ck["best"][1],
        best_weights={n: best_weights[n].to(params[n].device) for n in params} if keep_best and best_weights else None,
        since_best=ck["since_best"], before=ck["before"], warm_tokens=ck["warm"][0], warm_time=ck["warm"][1],
        seen_tokens=seen_tokens, train_s=train_s)


class Step(NamedTuple):
    """One optimizer step's measurements (tokens: this process's)."""

    loss: float  # per label token
    lr: float
    tokens: int
    seconds: float


class Training:
    """One run's loop and the phases it calls (evaluate, step, checkpoint, finish), over the run's parts."""

    def __init__(self, cfg: TrainConfig, run: RunFolder, acc, device: str, torch, data: TrainData, m: BuiltModel,
                 use_bf16: bool, ck: dict | None, t_start: float):
        self.cfg, self.run, self.acc, self.device, self.torch, self.data = cfg, run, acc, device, torch, data
        self.model, self.method, self.params = m.model, m.method, m.params
        self.loss_mod, self.opt = acc.prepare(m.loss_mod, m.opt)
        self.autocast = (lambda: torch.autocast(device_type=device, dtype=torch.bfloat16)) if use_bf16 else None
        self.rng = random.Random(cfg.seed)
        self.lengths = [len(ids) for ids, _ in data.train_set]
        self.per_epoch = cfg.steps_per_epoch(len(data.train_set), acc.num_processes)
        self.total = cfg.total_steps(len(data.train_set), acc.num_processes)
        self.eval_every = cfg.eval_interval(self.total) if data.held_set else None
        self.sched = lr_schedule(torch, self.opt, self.total, int(self.total * cfg.warmup_ratio))
        if ck:
            self.sched.load_state_dict(ck["scheduler"])
            for group, lr in zip(self.opt.param_groups, self.sched.get_last_lr()):
                group["lr"] = lr  # creating the scheduler reset it to step 0's rate
        self.pad = data.tok.pad_token_id if data.tok.pad_token_id is not None else 0
        self.heldout_tokens = sum(len(ids) for ids, _ in data.held_set)
        self.prog = Progress(self.total, self.eval_every, self.heldout_tokens,
                             sum(self.lengths) / len(self.lengths) * cfg.batch_size * cfg.grad_accum
                             * acc.num_processes)
        self.state = LoopState()
        self.resumed_from = ck["step"] if ck else None
        self.t_start = t_start
        self.load_s = round(time.perf_counter() - t_start, 1)

    # -- before the first step: the starting point's held-out loss, or the checkpoint's place --------------
    def evaluate_start(self) -> None:
        s, held = self.state, self.data.held_set
        self.run.status("running", total_steps=self.total, step=0)
        if held:
            log.info("held-out loss before training (%d examples, %d tokens)...", len(held), self.heldout_tokens)
        s.before = self.evaluate(0)
        if held:
            log.info("held-out loss before: %.4f (%.1fs); %d steps, %d per epoch", s.before, self.prog.eval_s,
                     self.total, self.per_epoch)
        self.run.metric(step=0, epoch=0.0, eval_loss=s.before, lr=0.0,
                        elapsed_s=round(time.perf_counter() - self.t_start, 2))
        s.evals = [(0, s.before)]
        s.best_loss, s.best_step, s.best_weights = s.before, 0, self.snapshot()  # step 0: the untrained start
        s.position = (0, 0, self.rng.getstate())

    def resume(self, ck: dict, best_weights: dict | None) -> None:
        self.rng.setstate(ck["epoch_rng"])
        self.torch.set_rng_state(ck["torch_rng"])
        self.state = restored_state(ck, best_weights, self.params, self.cfg.keep_best)
        self.prog.__dict__.update(ck["progress"])
        self.run.truncate_metrics(self.state.step)
        log.info("resumed from the checkpoint at step %d of %d (epoch %d)", self.state.step, self.total,
                 self.state.position[0] + 1)

    # -- the loop ------------------------------------------------------------------------------------------
    def loop(self) -> bool:
        """Optimizer steps until the step budget, early stopping or a cancel; False when cancelled.
        Each epoch shuffles the examples into length-grouped batches (under `accelerate launch` each
        process takes every n-th batch); grad_accum batches make one step."""
        s, cfg, acc = self.state, self.cfg, self.acc
        s.torch_rng = self.torch.get_rng_state()  # as after the last completed step: what a resume restores
        epoch, skip = s.position[0], s.position[1]  # resumed: the steps of that epoch done before the checkpoint
        self.loss_mod.train()
        done = s.step >= self.total
        while not done and not Stop.requested:
            epoch_rng = self.rng.getstate()
            batches = length_grouped_batches(len(self.data.train_set), self.lengths, cfg.batch_size, self.rng)
            batches = batches[acc.process_index::acc.num_processes]
            groups = [batches[i:i + cfg.grad_accum] for i in range(0, len(batches), cfg.grad_accum)]
            for gi, group in enumerate(groups[skip:], start=skip):
                step = self.train_step(group, (epoch, gi + 1, epoch_rng))
                if step is None:  # cancelled mid-step: its gradients are dropped
                    break
                done = self.after_step(step, epoch + (gi + 1) / len(groups))
                if done:
                    break
            skip = 0
            epoch += 1
        return done

    def train_step(self, group: list[list[int]], position: tuple) -> Step | None:
        """The step phase: forward and backward over the group's batches, then one optimizer step.
        None when a cancel came between batches."""
        acc, s, train = self.acc, self.state, self.data.train_set
        t0 = time.perf_counter()
        loss, labels, tokens = 0.0, 0, 0
        # Mean over the label tokens of the whole accumulated step, so short and long examples weigh
        # per token, whatever the grouping.
        n_labels = max(1, sum(sum(1 for x in train[i][1][1:] if x != IGNORE) for b in group for i in b))
        for k, b in enumerate(group):
            if Stop.requested:
                break
            # Gradients are averaged across processes once per step, on its last batch.
            ctx = acc.no_sync(self.loss_mod) if k < len(group) - 1 and acc.num_processes > 1 else nullcontext()
            with ctx:
                loss_sum, n, n_tokens = self.forward([train[i] for i in b])
                acc.backward(loss_sum / n_labels)
            loss, labels, tokens = loss + float(loss_sum.detach()), labels + int(n), tokens + n_tokens
        if Stop.requested:
            return None
        lr = self.sched.get_last_lr()[0]
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        s.step += 1
        s.torch_rng, s.position = self.torch.get_rng_state(), position
        return Step(loss / max(1, labels), lr, tokens, time.perf_counter() - t0)

    def forward(self, batch):
        """Summed loss, label count and token count of one batch."""
        ids, mask, labels = (t.to(self.acc.device) for t in collate(batch, self.pad))
        with self.autocast() if self.autocast else nullcontext():
            loss_sum, n = self.loss_mod(ids, mask, labels)
        return loss_sum, n, int(mask.sum())

    def after_step(self, st: Step, epoch: float) -> bool:
        """Speeds, the metrics line and status; an evaluation and a checkpoint when due. True when done."""
        s, cfg, world = self.state, self.cfg, self.acc.num_processes
        self.prog.record_step(st.seconds, st.tokens * world)
        s.seen_tokens, s.train_s = s.seen_tokens + st.tokens * world, s.train_s + st.seconds
        if s.step > 1:  # the first step pays one-off costs (allocator, kernels): left out of the rate
            s.warm_tokens += st.tokens * world
            s.warm_time += st.seconds
        rate = s.warm_tokens / s.warm_time if s.warm_time else st.tokens / st.seconds
        row = dict(step=s.step, epoch=round(epoch, 3), loss=round(st.loss, 5), lr=st.lr, tokens_per_s=round(rate, 1),
                   tokens=s.seen_tokens, train_s=round(s.train_s, 3), eta_s=self.prog.eta(s.step),
                   elapsed_s=round(time.perf_counter() - self.t_start, 2))
        evaluated = bool(self.data.held_set) and (s.step % self.eval_every == 0 or s.step == self.total)
        if evaluated:
            self.evaluate_step(row)
            log.info("step %d/%d loss %.4f held-out %.4f lr %.2e %.0f tok/s", s.step, self.total, row["loss"],
                     row["eval_loss"], row["lr"], rate)
        else:
            log.info("step %d/%d loss %.4f lr %.2e %.0f tok/s", s.step, self.total, row["loss"], row["lr"], rate)
        self.run.metric(**row)
        self.run.status("running", total_steps=self.total, step=s.step, eta_s=row["eta_s"], phase="training",
                        phase_done=s.step, phase_total=self.total, phase_detail=None)
        if evaluated or (cfg.save_every and s.step % cfg.save_every == 0):
            self.checkpoint_now()
        if cfg.early_stop and s.since_best >= cfg.early_stop:
            log.info("early stop: no held-out improvement in %d evaluations", cfg.early_stop)
            s.stopped_early = True
            return True
        return s.step >= self.total

    # -- evaluation and checkpoints ----------------------------------------------------------------------
    def evaluate_step(self, row: dict) -> None:
        """A scheduled evaluation: its loss goes into the metrics row, and keep-best and early stopping
        follow it."""
        s = self.state
        row["eval_loss"] = self.evaluate(s.step)
        row["eta_s"] = self.prog.eta(s.step)
        s.evals.append((s.step, row["eval_loss"]))
        if _better(row["eval_loss"], s.best_loss):
            s.best_loss, s.best_step, s.best_weights, s.since_best = row["eval_loss"], s.step, self.snapshot(), 0
        else:
            s.since_best += 1

    def evaluate(self, at_step: int) -> float | None:
        """The eval phase: plain cross-entropy per label token over the held-out split (summed over all
        processes), shortest examples first; status.json shows its progress and the run's ETA."""
        held, bs, torch = self.data.held_set, self.cfg.batch_size, self.torch
        if not held:
            return None
        self.loss_mod.eval()
        clock = EvalClock(self.heldout_tokens)
        tot, cnt = 0.0, 0
        order = sorted(range(len(held)), key=lambda i: len(held[i][0]))
        with torch.no_grad():
            for b in range(0, len(order), bs):
                if Stop.requested and cnt:
                    break  # a cancel must not wait for a full evaluation
                batch = [held[i] for i in order[b:b + bs]]
                loss_sum, n, _ = self.forward(batch)
                tot, cnt = tot + float(loss_sum), cnt + int(n)
                clock.add(sum(len(ids) for ids, _ in batch))
                self.run.status("running", phase="evaluating", phase_done=min(b + bs, len(order)),
                                phase_total=len(order), phase_detail=f"held-out loss at step {at_step}",
                                step=at_step, total_steps=self.total,
                                eta_s=self.prog.eta(at_step, clock.left_s() or 0.0, eval_rate=clock.rate()))
        self.loss_mod.train()
        self.prog.record_eval(clock.elapsed(), clock.done)
        if self.acc.num_processes > 1:
            t = self.acc.reduce(torch.tensor([tot, cnt], device=self.acc.device, dtype=torch.float64), "sum")
            tot, cnt = float(t[0]), int(t[1])
        return tot / max(1, cnt)

    def snapshot(self) -> dict | None:
        return {n: p.detach().clone() for n, p in self.params.items()} if self.cfg.keep_best else None

    def checkpoint_now(self) -> None:
        if self.acc.is_main_process and self.state.step > 0:
            save_checkpoint(self.run, self.params, self.opt, self.sched, self.state, self.data.sha, self.prog,
                            self.total)

    # -- the finish phase ----------------------------------------------------------------------------------
    def final_loss(self, cancelled: bool) -> tuple[int, float | None, int]:
        """(the step of the held-out loss reported, that loss, the step whose weights are kept)."""
        s = self.state
        if cancelled:
            self.checkpoint_now()  # so `--resume` can go on from the last completed step
            # Cancel must be quick: keep the last measured held-out loss instead of a new evaluation.
            after_step, after = s.evals[-1]
        elif s.evals[-1][0] == s.step or not self.data.held_set:
            after_step, after = s.step, s.evals[-1][1]
        else:
            after_step, after = s.step, self.evaluate(s.step)
            s.evals.append((s.step, after))
        chosen = s.step
        # --keep-best promises an evaluated step: a cancel between evaluations hands back the best evaluated
        # weights, not the unevaluated last ones (the checkpoint above keeps those for --resume).
        unevaluated = cancelled and after_step != s.step
        if self.cfg.keep_best and s.best_weights is not None and (_better(s.best_loss, after) or unevaluated):
            with self.torch.no_grad():
                for n, p in self.params.items():
                    p.copy_(s.best_weights[n])
            after_step, after, chosen = s.best_step, s.best_loss, s.best_step
            log.info("keep-best: weights from step %d (held-out %.4f)", chosen, after)
        return after_step, after, chosen

    def finish(self, done: bool) -> dict:
        """The final held-out loss (or keep-best's), the result written, and the run's summary."""
        s, cfg = self.state, self.cfg
        cancelled = Stop.requested and not done
        after_step, after, chosen = self.final_loss(cancelled)
        what = "adapter" if cfg.method == "lora" else "model"
        improved = None if s.before is None or after is None else _better(after, s.before)
        note = outcome_note(bool(self.data.held_set), s.step, chosen, s.before, after, improved,
                            "the adapter it continued" if cfg.init_adapter else f"the untrained starting {what}")
        if note:
            log.warning("%s", note)
        state = "cancelled" if cancelled else "finished"
        final = {"eval_loss_before": s.before, "eval_loss_after": after, "eval_loss_after_step": after_step,
                 "adapter_step": chosen, "adapter_is_start": chosen == 0, "improved": improved, "note": note,
                 "evaluation": bool(self.data.held_set), "steps": s.step, "total_steps": self.total,
                 "cancelled": cancelled, "stopped_early": s.stopped_early,
                 "evals": [{"step": st, "eval_loss": v} for st, v in s.evals],
                 "train_tokens_per_s": round(s.warm_tokens / s.warm_time, 1) if s.warm_time else None,
                 "eval_tokens_per_s": round(self.prog.eval_tok_s, 1) if self.prog.eval_tok_s else None,
                 "load_seconds": self.load_s, "train_seconds": round(time.perf_counter() - self.t_start, 1),
                 "method": self.method, "resumed_from_step": self.resumed_from, "peak_rss_mb": peak_rss_mb()}
        out = self.write_result(final, state, after) if self.acc.is_main_process else {}
        loss_txt = "no held-out loss" if s.before is None else f"held-out {s.before:.4f} -> {after:.4f}"
        log.info("%s after %d steps: %s; %s in %s", state, s.step, loss_txt, what,
                 out.get("adapter") or out.get("model") or self.run.path)
        return {"run_dir": str(self.run.path), "adapter": out.get("adapter"), "status": state, "method": cfg.method,
                **{k: final.get(k) for k in ("eval_loss_before", "eval_loss_after", "train_tokens_per_s", "steps",
                                             "peak_rss_mb", "improved", "adapter_is_start", "note", "model", "gguf")}}

    def write_result(self, final: dict, state: str, after: float | None) -> dict:
        """The adapter (or the full model), final_eval.json, the final metrics line and status.json; a
        finished run's checkpoint goes (nothing is left to resume)."""
        from pet.adapters import INFO_FILE

        cfg, d, s, run = self.cfg, self.data, self.state, self.run
        what = "adapter" if cfg.method == "lora" else "model"
        run.phase("saving", f"writing the {what}", step=s.step, total_steps=self.total)
        meta = {"name": run.path.name, "base": d.base, "method": self.method, "template": d.template.name,
                "model_type": getattr(getattr(self.model, "config", None), "model_type", None),
                "model_config": _model_config(self.model), "system_prompt": d.system, "data_sha256": d.sha,
                "data_path": str(d.path), "eval_loss_before": s.before, "eval_loss_after": after, "steps": s.step,
                "created": time.time()}
        if cfg.method == "lora":
            meta.update(lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules=cfg.modules())
            out = save_adapter(self.acc.unwrap_model(self.loss_mod).lm, run.path / "adapter", meta, INFO_FILE)
        else:
            out = save_full_model(self.model, d.tok, run.path, meta, d.template, d.model_file)
        final.update(out)
        write_json(run.path / "final_eval.json", final)
        run.metric(final=True, step=s.step, eval_loss=after, eval_loss_before=s.before,
                   tokens_per_s=final["train_tokens_per_s"], elapsed_s=final["train_seconds"], state=state)
        if state != "cancelled":
            shutil.rmtree(run.path / checkpoint.FOLDER, ignore_errors=True)
        run.status(state, step=s.step, finished=time.time(), phase=None, phase_done=None, phase_total=None,
                   phase_detail=None, eta_s=None)
        return out


def outcome_note(evaluated: bool, step: int, chosen: int, before: float | None, after: float | None,
                 improved: bool | None, start_point: str) -> str | None:
    """Said plainly when the result is not an upgrade (or nothing can say it is); None when it improved."""
    if not evaluated:
        return "no held-out example fits in --max-seq-len: trained without evaluation, so nothing says it improved"
    if step == 0:
        return f"stopped before its first step: the result is {start_point}, not an upgrade"
    if chosen == 0:
        return (f"no evaluation beat the starting point (held-out {before:.4f}): the result is {start_point}, "
                "not an upgrade")
    if not improved:
        return f"the held-out loss did not improve ({before:.4f} -> {after:.4f})"
    return None


def _train(cfg: TrainConfig, run: RunFolder, acc, device: str, torch, resume: bool = False) -> dict:
    """One run, phase by phase (each phase reports itself in status.json)."""
    t_start = time.perf_counter()
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    data = prepare_data(cfg, run, resume)
    use_bf16 = wants_bf16(cfg, device, torch)
    if cfg.init_adapter:
        continue_adapter(cfg, data.base)
    record_config(cfg, run, acc, data, device, use_bf16, resume)
    m = build_model(cfg, run, acc, data, device, use_bf16, torch)
    ck, best_weights = load_checkpoint(run, m.params, m.opt, torch) if resume else (None, None)
    t = Training(cfg, run, acc, device, torch, data, m, use_bf16, ck, t_start)
    if ck:
        t.resume(ck, best_weights)
    else:
        t.evaluate_start()  # the held-out loss at step 0: what the result must beat
    done = t.loop()
    return t.finish(done)


def _better(loss: float | None, than: float | None) -> bool:
    """A held-out loss beats another; a diverged (NaN) one never does, and anything beats NaN."""
    if loss is None or math.isnan(loss):
        return False
    return than is None or math.isnan(than) or loss < than


def _model_config(model) -> dict:
    from pet.export import model_config

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = getattr(inner, "config", None)
    return model_config(getattr(cfg, "model_type", None), cfg.to_dict()) if cfg is not None else {}


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (the run's memory target is < 6 GB on a CPU)."""
    import resource

    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    return round(kb / 1024, 1)


def to_bf16_file(path: Path) -> None:
    """Rewrite a safetensors file in bf16: PEFT saves the fp32 training copy, and shipped adapters must
    stay small (bf16 keeps fp32's range; an update's rounding is far below what training changes)."""
    import torch
    from safetensors.torch import load_file, save_file

    tensors = {k: v.to(torch.bfloat16).contiguous() for k, v in load_file(str(path)).items()}
    save_file(tensors, str(path), metadata={"format": "pt"})


def save_adapter(peft_model, target: Path, meta: dict, info_file: str) -> dict:
    """Write the PEFT adapter (bf16), its identity file and its GGUF form (f16, for llama.cpp) to a temp
    folder, then swap it in whole."""
    from pet.adapters import GGUF_FILE
    from pet.export import write_gguf_adapter

    out = {"adapter": str(target), "gguf": None}
    with atomic_folder(target) as tmp:
        peft_model.save_pretrained(tmp)
        (tmp / "README.md").unlink(missing_ok=True)  # PEFT's empty model-card template
        to_bf16_file(tmp / "adapter_model.safetensors")
        # Record the base as PET names it (not a private cache path); loading uses the tier's model anyway.
        cfg_path = tmp / "adapter_config.json"
        peft_cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        peft_cfg["base_model_name_or_path"] = meta["base"].get("ref", peft_cfg.get("base_model_name_or_path"))
        write_json(cfg_path, peft_cfg)
        write_json(tmp / info_file, meta)
        try:
            write_gguf_adapter(tmp, tmp / GGUF_FILE)
            out["gguf"] = str(target / GGUF_FILE)
        except PetError as e:  # an architecture llama.cpp's adapter format is not written for: PEFT only
            log.warning("no GGUF adapter: %s", e)
    return out


def save_full_model(model, tokenizer, run_path: Path, meta: dict, template, model_file: str | None) -> dict:
    """A full run's result: RUN/model (transformers, fp32, so `pet export lora` sees the exact weight
    changes) and RUN/model.gguf (f16, what llama.cpp serves)."""
    from pet.export import write_gguf_model

    target = run_path / "model"
    with atomic_folder(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "pet_model.json", meta)
    out = {"model": str(target), "gguf": None}
    try:
        write_gguf_model(target, run_path / "model.gguf", tokenizer_gguf=model_file, chat_template=template.source,
                         name=f"PET full fine-tune {run_path.name}")
        out["gguf"] = str(run_path / "model.gguf")
    except PetError as e:
        log.warning("no GGUF model: %s", e)
    return out
