"""The trainer end to end on a tiny Gemma 3 built here, and the jobs around it (start, cancel, reattach)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pet import PetError
from pet.templates import BUILTIN, GEMMA3

REPO = Path(__file__).resolve().parent.parent


def make_tiny_model(folder: Path, seed: int = 0) -> Path:
    """A 2-layer Gemma 3 (hidden 32) with a small byte-level BPE tokenizer that knows Gemma's turn tokens."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedTokenizerFast

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    corpus = ["user model write a prompt about the sea", "You are an expert. Task: improve the request."] * 3
    tk.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=specials, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                  unk_token="<unk>")
    tok.chat_template = GEMMA3
    torch.manual_seed(seed)
    cfg = Gemma3TextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=1024,
                           pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                           eos_token_id=tok.eos_token_id, sliding_window=64,
                           layer_types=["sliding_attention", "full_attention"])
    Gemma3ForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def make_examples(n: int = 40) -> list[dict]:
    topics = ["the sea", "taxes", "a cat", "rockets", "bread", "jazz", "chess", "rain", "maps", "tea"]
    out = []
    for i in range(n):
        t = topics[i % len(topics)]
        out.append({"messages": [
            {"role": "user", "content": f"write about {t} number {i}"},
            {"role": "assistant", "content": f"You are an expert on {t}. Task: write a short piece about {t}."}]})
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    model = make_tiny_model(root / "model")
    data = root / "examples.jsonl"
    data.write_text("".join(json.dumps(e) + "\n" for e in make_examples()))
    return model, data


def test_labels_cover_exactly_the_assistant_turns(tiny):
    from transformers import AutoTokenizer

    from pet.train.trainer import IGNORE, label_tokens

    tok = AutoTokenizer.from_pretrained(tiny[0])
    msgs = [{"role": "system", "content": "Be PET."}, {"role": "user", "content": "fix my prompt"},
            {"role": "assistant", "content": "You are a writer."}, {"role": "user", "content": "shorter"},
            {"role": "assistant", "content": "Write 3 lines."}]
    text, spans = BUILTIN["gemma3"].training_text(msgs)
    ids, labels = label_tokens(tok, text, spans, max_len=1024)
    assert len(ids) == len(labels)
    kept = [i for i, lab in zip(ids, labels) if lab != IGNORE]
    assert all(lab in (IGNORE, i) for i, lab in zip(ids, labels))
    # The trained tokens spell the two answers with their end-of-turn markers, and nothing else.
    assert tok.decode(kept) == "You are a writer.<end_of_turn>\nWrite 3 lines.<end_of_turn>\n"
    first_label = next(k for k, lab in enumerate(labels) if lab != IGNORE)
    assert tok.decode(ids[:first_label]).endswith("<start_of_turn>model\n")
    # Truncation keeps ids and labels aligned.
    ids8, labels8 = label_tokens(tok, text, spans, max_len=8)
    assert len(ids8) == len(labels8) == 8 and set(labels8) == {IGNORE}


def test_end_of_turn_weight_in_training_only(tiny):
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pet.train.trainer import IGNORE, end_token_ids, label_tokens, make_label_loss

    tok = AutoTokenizer.from_pretrained(tiny[0])
    model = AutoModelForCausalLM.from_pretrained(tiny[0])
    ends = end_token_ids(tok, BUILTIN["gemma3"])
    assert ends == (tok.convert_tokens_to_ids("<end_of_turn>"), tok.convert_tokens_to_ids("<eos>"))
    text, spans = BUILTIN["gemma3"].training_text([{"role": "user", "content": "a cat"},
                                                   {"role": "assistant", "content": "You are a poet."}])
    ids, labels = label_tokens(tok, text, spans, max_len=1024)
    ids_t, labels_t = torch.tensor([ids]), torch.tensor([labels])
    mask = torch.ones_like(ids_t)
    with torch.no_grad():
        logits = model(input_ids=ids_t).logits[0, :-1]
        target = labels_t[0, 1:]
        keep = target != IGNORE
        per = F.cross_entropy(logits[keep].float(), target[keep], reduction="none")
        w = torch.tensor([3.0 if t in ends else 1.0 for t in target[keep].tolist()])
        assert (w == 3.0).sum() == 1  # exactly one end-of-turn label in one answer
        mod = make_label_loss(model, ends, 3.0)
        mod.train()
        weighted, n = mod(ids_t, mask, labels_t)
        mod.eval()
        plain, _ = mod(ids_t, mask, labels_t)
    assert int(n) == int(keep.sum())
    assert torch.allclose(weighted, (per * w).sum(), rtol=1e-4)
    assert torch.allclose(plain, per.sum(), rtol=1e-4)  # evaluation stays plain cross-entropy


def _run_cli(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "pet", "train", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def cli_run(tiny, tmp_path_factory, pet_home):
    """One short CLI run (4 steps), shared by the tests that inspect its folder and its adapter."""
    from safetensors.torch import load_file

    model_dir, data = tiny
    base_before = load_file(model_dir / "model.safetensors")
    out = tmp_path_factory.mktemp("cli") / "run"
    r = _run_cli("--base", str(model_dir), "--data", str(data), "--max-steps", "4", "--eval-every", "2",
                 "--batch-size", "2", "--grad-accum", "2", "--lr", "1e-2", "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    return out, r, base_before


def test_cli_end_to_end_run_folder(tiny, cli_run):
    import torch
    from safetensors.torch import load_file

    model_dir, data = tiny
    out, r, base_before = cli_run
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["run_dir"] == str(out) and summary["adapter"] == str(out / "adapter")
    assert summary["status"] == "finished" and summary["steps"] == 4
    assert summary["train_tokens_per_s"] > 0
    assert 100 < summary["peak_rss_mb"] < 6144  # a tiny model; the real run's figure is in run.json
    assert summary["eval_loss_after"] < summary["eval_loss_before"]

    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["config.json", "metrics.jsonl", "train.log", "status.json", "data_sha256", "final_eval.json", "adapter"])
    assert sorted(p.name for p in (out / "adapter").iterdir()) == [
        "adapter.gguf", "adapter_config.json", "adapter_model.safetensors", "pet_adapter.json"]
    assert summary["gguf"] == str(out / "adapter" / "adapter.gguf")

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r_.get("step") for r_ in rows] == [0, 1, 2, 3, 4, 4]
    assert set(rows[0]) == {"step", "epoch", "eval_loss", "lr", "elapsed_s"}
    for row in rows[1:5]:
        assert {"step", "epoch", "loss", "lr", "tokens_per_s", "eta_s", "elapsed_s"} <= set(row)
        assert row["loss"] > 0 and row["eta_s"] >= 0
    assert "eval_loss" in rows[2] and "eval_loss" in rows[4] and "eval_loss" not in rows[1]
    assert rows[-1]["final"] is True and rows[-1]["state"] == "finished"

    from pet import dataset

    train, held = dataset.split(dataset.read_jsonl(data))
    assert (out / "data_sha256").read_text().strip() == dataset.examples_sha256(train)
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "finished"
    final = json.loads((out / "final_eval.json").read_text())
    assert final["eval_loss_before"] == summary["eval_loss_before"] and final["steps"] == 4
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["resolved"]["train_examples"] == len(train) and cfg["resolved"]["heldout_examples"] == len(held)
    meta = json.loads((out / "adapter" / "pet_adapter.json").read_text())
    assert meta["base"] == {"ref": str(model_dir.resolve())}
    assert meta["data_sha256"] == dataset.examples_sha256(train)

    # Base weights untouched on disk; LoRA B (initialised to zero) has moved.
    base_after = load_file(model_dir / "model.safetensors")
    assert all(torch.equal(base_before[k], base_after[k]) for k in base_before)
    lora = load_file(out / "adapter" / "adapter_model.safetensors")
    assert lora and all("lora_" in k for k in lora)
    assert {v.dtype for v in lora.values()} == {torch.bfloat16}  # shipped adapters: half of fp32's size
    assert any(k.endswith("lora_B.weight") and lora[k].abs().sum() > 0 for k in lora)

    # Loaded with PEFT onto the base, the frozen weights equal the originals exactly.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    m = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), out / "adapter")
    q = m.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight
    assert torch.equal(q, base_before["model.layers.0.self_attn.q_proj.weight"])


def test_early_stop_and_keep_best(tiny, tmp_path):
    # A learning rate far too high makes the held-out loss rise: early stopping ends the run and
    # keep-best hands back the adapter from the best evaluation, not the last one. fp32 on every machine: in
    # bf16 (CPUs with AVX-512 BF16) lr 0.5 already diverged, in fp32 it still crept down for 40 steps.
    out = tmp_path / "run"
    r = _run_cli("--base", str(tiny[0]), "--data", str(tiny[1]), "--max-steps", "40", "--eval-every", "1",
                 "--lr", "1.0", "--precision", "fp32", "--early-stop", "2", "--keep-best", "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    final = json.loads((out / "final_eval.json").read_text())
    assert final["stopped_early"] is True and final["steps"] < 40
    losses = {e["step"]: e["eval_loss"] for e in final["evals"]}
    best_step = min(losses, key=losses.get)
    assert final["adapter_step"] == best_step and final["eval_loss_after"] == losses[best_step]
    assert final["steps"] - best_step == 2  # two evaluations without improvement, then stop


def test_bad_flags_exit_2_naming_the_flag(capsys):
    from pet.cli import main

    for argv, flag in ((["train", "--lora-r", "0"], "--lora-r"), (["train", "--lr", "abc"], "--lr"),
                       (["train", "--epochs", "1", "--max-steps", "3"], "--max-steps"),
                       (["train", "--device", "tpu"], "--device"),
                       (["train", "--tier", "nope"], "--tier")):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        assert flag in capsys.readouterr().err


def test_cuda_without_cuda_is_a_clear_error(tiny, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    r = _run_cli("--base", str(tiny[0]), "--data", str(tiny[1]), "--device", "cuda", "--out", str(tmp_path / "r"))
    assert r.returncode == 1
    assert "--device cuda: CUDA is not available here" in r.stderr and "Traceback" not in r.stderr
    assert json.loads((tmp_path / "r" / "status.json").read_text())["state"] == "failed"


def _wait(cond, timeout=90.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.3)
    raise AssertionError("timed out")


def test_job_reattach_one_at_a_time_cancel(tiny, pet_home):
    from pet.train import jobs
    from pet.train.trainer import TrainConfig

    home = pet_home / "jobs-a"
    cfg = TrainConfig(tier=None, base=str(tiny[0]), data=str(tiny[1]), max_steps=100000, eval_every=1000)
    run_id = jobs.start(home, cfg)
    run_dir = jobs.runs_dir(home) / run_id
    _wait(lambda: any("loss" in r for r in jobs.read_metrics(run_dir)))
    # A fresh look at the runs folder (a reloaded page, a restarted app) finds the running job.
    again = jobs.active(home)
    assert again["id"] == run_id and again["state"] == "running" and again["step"] >= 1
    with pytest.raises(jobs.JobRunning, match=run_id):
        jobs.start(home, cfg)
    done = jobs.cancel(home, run_id, wait_s=30)  # cancelled within 30 s, or the state below says not
    assert done["state"] == "cancelled", jobs.log_tail(run_dir)
    assert done["adapter"] == str(run_dir / "adapter")
    assert (run_dir / "adapter" / "adapter_model.safetensors").exists()
    assert json.loads((run_dir / "final_eval.json").read_text())["cancelled"] is True
    assert jobs.active(home) is None
    with pytest.raises(PetError, match="not running"):
        jobs.cancel(home, run_id)


def test_failed_job_shows_its_error(tiny, pet_home):
    from pet.train import jobs
    from pet.train.trainer import TrainConfig

    home = pet_home / "jobs-b"
    run_id = jobs.start(home, TrainConfig(tier=None, base=str(tiny[0]), data=str(tiny[0] / "missing.jsonl")))
    run = _wait(lambda: (r := jobs.info(jobs.runs_dir(home) / run_id))["state"] == "failed" and r)
    assert run["error"].startswith("--data: ") and "missing.jsonl not found" in run["error"]
    assert "run failed: --data:" in jobs.log_tail(jobs.runs_dir(home) / run_id)


def test_dead_process_shows_interrupted(tmp_path):
    from pet.train import jobs

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    run = jobs.runs_dir(tmp_path) / "20240101-000000-dead"
    run.mkdir()
    (run / "status.json").write_text(json.dumps({"state": "running", "pid": proc.pid}))
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo')  # torn last line
    got = jobs.info(run)
    assert got["state"] == "interrupted" and got["step"] == 1
    assert jobs.active(tmp_path) is None
    assert [r["id"] for r in jobs.list_runs(tmp_path)] == ["20240101-000000-dead"]


def test_adapter_refuses_another_base(tiny, cli_run, tmp_path):
    from pet.adapters import base_identity, check_base, read_adapter
    from pet.backends.base import BackendError
    from pet.config import TierSpec
    from pet.tiers import Registry

    out = cli_run[0]
    other = make_tiny_model(tmp_path / "other", seed=1)
    ad = read_adapter(out / "adapter")
    check_base(ad, base_identity(str(tiny[0].resolve()), tiny[0]))  # its own base: fine
    reg = Registry([TierSpec("mine", "hf", str(other), adapter=str(out / "adapter"))], tmp_path, tmp_path)
    with pytest.raises(BackendError) as e:
        reg.backend("mine")
    assert f"trained on {tiny[0].resolve()}" in str(e.value) and f"this tier's model is {other}" in str(e.value)


def test_continue_an_adapter(tiny, cli_run, tmp_path):
    out, r, _ = cli_run
    first = json.loads(r.stdout.strip().splitlines()[-1])
    r2 = _run_cli("--base", str(tiny[0]), "--data", str(tiny[1]), "--max-steps", "1", "--init-adapter",
                  str(out / "adapter"), "--out", str(tmp_path / "more"), "--json")
    assert r2.returncode == 0, r2.stderr[-2000:]
    more = json.loads(r2.stdout.strip().splitlines()[-1])
    # It starts where the first run ended, not from a fresh LoRA.
    assert more["eval_loss_before"] == pytest.approx(first["eval_loss_after"], rel=1e-4)
    cfg = json.loads((tmp_path / "more" / "config.json").read_text())
    assert cfg["init_adapter"] == str(out / "adapter") and cfg["lora_r"] == 16


def test_adapter_as_tier_survives_a_restart(tiny, cli_run, tmp_path):
    from pet.config import Settings
    from pet.engine import Engine
    from pet.train import jobs

    tiers = tmp_path / "tiers.toml"
    tiers.write_text(f'[tiers.tiny]\nbackend = "hf"\nmodel = "{tiny[0].resolve()}"\nsystem_prompt = "Be PET."\n')
    home = tmp_path / "home"
    run_dir = jobs.runs_dir(home) / "20250101-000000-abcd"
    import shutil

    shutil.copytree(cli_run[0], run_dir)
    eng = Engine(Settings(home=home, tiers_path=tiers))
    spec = jobs.use_adapter(eng, run_dir.name, "tiny", new_name="tiny-ft")
    assert eng.tiers.spec("tiny-ft").adapter == str(run_dir / "adapter")
    assert spec.system_prompt == ""  # served as it was trained: that run had no system prompt
    with pytest.raises(PetError, match="exists already"):
        jobs.use_adapter(eng, run_dir.name, "tiny", new_name="tiny-ft")
    restarted = Engine(Settings(home=home, tiers_path=tiers))
    assert restarted.tiers.names() == ["tiny", "tiny-ft"]
    assert restarted.tiers.spec("tiny-ft").adapter == str(run_dir / "adapter")
    assert restarted.tiers.spec("tiny").adapter is None
