"""The trainer's phases one at a time, without a training run: the run's length."""

from __future__ import annotations

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
