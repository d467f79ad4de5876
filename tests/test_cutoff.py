"""One training cutoff (issue 8, item 4): the Data tab and `pet data` warn at the trainer's own default
max_seq_len, and count an example as the trainer does, with the tier's system prompt."""

from __future__ import annotations

import json

import pytest

from pet import dataset
from pet.config import Settings
from pet.engine import Engine
from tests.test_trainer import make_tiny_model

SYSTEM = "You are PET. Rewrite the request as a prompt with a role, a task, context and an output format."


@pytest.fixture(scope="module")
def tiny_engine(tmp_path_factory):
    root = tmp_path_factory.mktemp("cutoff")
    make_tiny_model(root / "tiny")
    tiers = root / "tiers.toml"
    tiers.write_text(f'[tiers.tiny]\nbackend = "hf"\nmodel = "./tiny"\nsystem_prompt = "{SYSTEM}"\n'
                     '[tiers.bare]\nbackend = "hf"\nmodel = "./tiny"\n')
    return Engine(Settings(home=root / "home", tiers_path=tiers))


EXAMPLE = {"messages": [{"role": "user", "content": "write about the sea"},
                        {"role": "assistant", "content": "You are an expert. Task: write a short piece about the sea."}]}


def test_the_warning_cutoff_is_the_trainers_default():
    from pet.cli import build_parser
    from pet.train.trainer import TrainConfig

    assert TrainConfig().max_seq_len == dataset.MAX_SEQ_LEN == 768
    parser = build_parser()
    for cmd in (["data", "validate", "x.jsonl"], ["data", "stats"]):
        assert parser.parse_args(cmd).cutoff == dataset.MAX_SEQ_LEN


def test_lengths_count_what_the_trainer_tokenises(tiny_engine):
    from transformers import AutoTokenizer

    from pet.train.trainer import encode

    spec = tiny_engine.tiers.spec("tiny")
    tok = AutoTokenizer.from_pretrained(spec.model)
    template = tiny_engine.template_for("tiny")
    [(ids, _labels)], dropped = encode([EXAMPLE], tok, template, spec.system_prompt, max_len=10**6)
    assert dropped == 0
    with_system = dataset.Lengths(tiny_engine, "tiny")
    assert with_system.exact
    assert with_system(EXAMPLE) == len(ids)
    # The system prompt is part of the count: the same example on a tier without one is shorter by about it.
    bare = dataset.Lengths(tiny_engine, "bare")(EXAMPLE)
    assert bare < len(ids)
    [(bare_ids, _)], _ = encode([EXAMPLE], tok, template, "", max_len=10**6)
    assert bare == len(bare_ids)
    # A different system prompt is a different cache key for stored token counts.
    assert dataset.Lengths(tiny_engine, "bare").ident != with_system.ident


def test_an_example_that_fits_only_without_the_system_prompt_is_warned(tiny_engine, tmp_path):
    f = tmp_path / "one.jsonl"
    f.write_text(json.dumps(EXAMPLE) + "\n")
    lengths = dataset.Lengths(tiny_engine, "tiny")
    full, bare = lengths(EXAMPLE), dataset.Lengths(tiny_engine, "bare")(EXAMPLE)
    cutoff = (full + bare) // 2  # the example alone fits; with the tier's system prompt it does not
    assert bare <= cutoff < full
    res = dataset.validate_file(f, lengths=lengths, cutoff=cutoff)
    assert res.ok and [str(w) for w in res.warnings] == [
        f"row 1, messages: {full} tokens, over the training cutoff of {cutoff}: the trainer will cut the end off"]
    assert not dataset.validate_file(f, lengths=lengths, cutoff=full).warnings
