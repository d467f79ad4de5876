"""The trainer's phases one at a time, without a training run: the run's length, the checkpoint round trip,
the held-out evaluation on a tiny model, and the note on a result that is not an upgrade."""

from __future__ import annotations

import json
import random

import pytest

from pet.train.trainer import TrainConfig


def test_steps_per_epoch_is_one_rule_for_the_trainer_and_the_estimate():
    from pet.train import jobs

    cfg = TrainConfig(batch_size=2, grad_accum=4, epochs=1.5)
    assert cfg.steps_per_epoch(100) == 13  # 50 batches, 4 to a step
    assert cfg.steps_per_epoch(100, processes=2) == 7  # each of 2 processes takes 25 batches
    assert cfg.total_steps(100) == 20 and TrainConfig(max_steps=3).total_steps(100) == 3
    assert cfg.eval_interval(20) == 2 and TrainConfig(eval_every=5).eval_interval(20) == 5
    examples = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}
                for i in range(100)]
    from pet import dataset

    train, _ = dataset.split(examples)
    assert jobs.estimate(examples, cfg)["steps"] == cfg.total_steps(len(train))


def _tiny_optimizer():
    import torch

    lin = torch.nn.Linear(4, 3)
    params = dict(lin.named_parameters())
    opt = torch.optim.AdamW(list(params.values()), lr=0.1)
    lin(torch.randn(2, 4)).sum().backward()
    opt.step()
    return params, opt


def test_checkpoint_round_trip_puts_back_weights_optimizer_and_the_loops_place(tmp_path):
    import torch

    from pet.train.progress import Progress
    from pet.train.trainer import LoopState, RunFolder, load_checkpoint, lr_schedule, restored_state, save_checkpoint

    torch.manual_seed(0)
    params, opt = _tiny_optimizer()
    sched = lr_schedule(torch, opt, total=10, warmup=2)
    for _ in range(3):
        opt.step()
        sched.step()
    prog = Progress(10, 2, 100, 50.0)
    prog.record_step(2.0, 50)
    prog.record_step(1.0, 50)
    prog.record_eval(3.0, 100)
    rng = random.Random(7)
    rng.random()
    state = LoopState(step=3, position=(1, 2, rng.getstate()), torch_rng=torch.get_rng_state(),
                      evals=[(0, 2.5), (2, 2.25)], best_loss=2.25, best_step=2,
                      best_weights={n: p.detach().clone() * 2 for n, p in params.items()}, since_best=1, before=2.5,
                      warm_tokens=100, warm_time=1.5, seen_tokens=150, train_s=3.5)
    run = RunFolder(tmp_path)
    save_checkpoint(run, params, opt, sched, state, "abc123", prog, total=10)
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["phase"] == "checkpointing" and status["step"] == 3 and status["total_steps"] == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "status.json"]  # no temp folder left

    torch.manual_seed(1)  # a fresh model and optimizer, as a resumed process builds them
    params2, opt2 = _tiny_optimizer()
    ck, best = load_checkpoint(run, params2, opt2, torch)
    assert all(torch.equal(params[n], params2[n]) for n in params)
    m1, m2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert all(torch.equal(m1[k]["exp_avg"], m2[k]["exp_avg"]) for k in m1)
    back = restored_state(ck, best, params2, keep_best=True)
    assert (back.step, back.position, back.evals, back.best_loss, back.best_step, back.since_best, back.before) == \
        (3, (1, 2, rng.getstate()), [(0, 2.5), (2, 2.25)], 2.25, 2, 1, 2.5)
    assert (back.warm_tokens, back.warm_time, back.seen_tokens, back.train_s) == (100, 1.5, 150, 3.5)
    assert torch.equal(back.torch_rng, state.torch_rng)
    assert all(torch.equal(back.best_weights[n], state.best_weights[n]) for n in params)
    assert restored_state(ck, best, params2, keep_best=False).best_weights is None
    sched2 = lr_schedule(torch, opt2, total=10, warmup=2)
    sched2.load_state_dict(ck["scheduler"])
    assert sched2.get_last_lr() == sched.get_last_lr()
    assert {k: v for k, v in ck["progress"].items()} == {
        "step_times": [1.0], "first_step": 2.0, "eval_s": 3.0, "eval_tok_s": 100 / 3.0, "train_tok_s": 50.0}

    with pytest.raises(Exception, match="does not match this model's trainable weights"):
        load_checkpoint(run, {"other.weight": params2["weight"]}, opt2, torch)


def _tiny_model_and_held(tmp_path, n_held: int):
    """A tiny Gemma 3 folder, its tokenizer and n_held examples encoded as the trainer's held-out set."""
    from transformers import AutoTokenizer

    from pet.templates import BUILTIN
    from pet.train.trainer import encode
    from tests.test_trainer import make_examples, make_tiny_model

    folder = str(make_tiny_model(tmp_path / "tiny"))
    tok = AutoTokenizer.from_pretrained(folder)
    held, _ = encode(make_examples(n_held), tok, BUILTIN["gemma3"], "Be PET.", 256)
    return folder, tok, held


def _tiny_training(tmp_path, folder, tok, held, run_name: str = "run", **cfg_kw):
    """A Training over the tiny model, built as _train builds one, without a training run."""
    import torch
    from accelerate import Accelerator

    from pet.templates import BUILTIN
    from pet.train.trainer import BuiltModel, RunFolder, Training, TrainData, load_model, make_label_loss

    cfg = TrainConfig(tier=None, base=folder, seed=0, **cfg_kw)
    torch.manual_seed(0)
    model, method = load_model(folder, cfg, "cpu", use_bf16=False)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    m = BuiltModel(model, method, params, torch.optim.AdamW(list(params.values())), make_label_loss(model))
    data = TrainData(tmp_path, [], [], held, held, 0, 0, "sha", tok, folder, {}, BUILTIN["gemma3"], "", "t", None)
    return Training(cfg, RunFolder(tmp_path / run_name), Accelerator(cpu=True), "cpu", torch, data, m, False, None,
                    0.0)


def test_the_eval_phase_alone_on_a_tiny_model(tmp_path):
    """evaluate() is plain cross-entropy per label token, whatever the batch size, and reports its progress."""
    import torch

    folder, tok, held = _tiny_model_and_held(tmp_path, 5)
    losses = []
    for bs in (1, 3):
        t = _tiny_training(tmp_path, folder, tok, held, f"run{bs}", batch_size=bs, max_steps=4)
        losses.append(t.evaluate(0))
        status = json.loads((t.run.path / "status.json").read_text())
        assert status["phase"] == "evaluating" and status["phase_done"] == status["phase_total"] == 5
        assert t.prog.eval_s is not None and t.prog.eval_tok_s > 0
    model = t.model
    # the same number by hand: summed cross-entropy over the label tokens / their count
    with torch.no_grad():
        tot = cnt = 0
        for ids, labels in held:
            logits = model(torch.tensor([ids])).logits[0, :-1].float()
            target = torch.tensor(labels[1:])
            keep = target != -100
            tot += float(torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="sum"))
            cnt += int(keep.sum())
    assert losses[0] == pytest.approx(losses[1], rel=1e-5) == pytest.approx(tot / cnt, rel=1e-4)


def test_outcome_note_says_what_the_result_is_not():
    from pet.train.trainer import outcome_note

    start = "the untrained starting adapter"
    assert outcome_note(True, 4, 4, 2.0, 1.5, True, start) is None
    assert outcome_note(False, 4, 4, None, None, None, start).startswith("no held-out example fits")
    assert outcome_note(True, 0, 0, 2.0, 2.0, False, start) == (
        f"stopped before its first step: the result is {start}, not an upgrade")
    assert outcome_note(True, 4, 0, 2.0, 2.0, False, start) == (
        f"no evaluation beat the starting point (held-out 2.0000): the result is {start}, not an upgrade")
    assert outcome_note(True, 4, 4, 2.0, 2.5, False, start) == "the held-out loss did not improve (2.0000 -> 2.5000)"


@pytest.mark.parametrize("keep_best", [True, False])
def test_cancel_between_evaluations_with_keep_best_hands_back_the_best_evaluated_weights(tmp_path, keep_best):
    """Evaluated at steps 0 and 2 (the best), cancelled at step 3: --keep-best hands back step 2's weights, as
    it promises, and the checkpoint still holds step 3's for --resume. Without --keep-best the last weights
    stay and the record says which step they are from."""
    import torch

    from pet.train import checkpoint

    t = _tiny_training(tmp_path, *_tiny_model_and_held(tmp_path, 3), max_steps=6, keep_best=keep_best)
    s = t.state
    with torch.no_grad():
        for p in t.params.values():
            p.add_(0.5)  # "trained" to step 2, where the held-out loss was measured
    step2 = {n: p.detach().clone() for n, p in t.params.items()}
    s.step, s.evals, s.before = 2, [(0, 3.0), (2, 2.5)], 3.0
    s.best_loss, s.best_step, s.best_weights = 2.5, 2, t.snapshot()
    with torch.no_grad():
        for p in t.params.values():
            p.add_(0.25)  # one more step, not evaluated
    step3 = {n: p.detach().clone() for n, p in t.params.items()}
    s.step = 3

    after_step, after, chosen = t.final_loss(cancelled=True)

    assert (after_step, after) == (2, 2.5)
    kept = step2 if keep_best else step3
    assert chosen == (2 if keep_best else 3)
    assert all(torch.equal(t.params[n], kept[n]) for n in kept)
    weights, _, ck = checkpoint.load(t.run.path)  # what --resume continues from: the step-3 weights
    assert ck["step"] == 3 and all(torch.equal(weights[n], step3[n]) for n in step3)
