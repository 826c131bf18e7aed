"""The trained tiny checkpoint: made by bench/train_tiny.py, deterministically, and committed with its record."""

from __future__ import annotations

import json

import torch

from bench.train_tiny import CHECKPOINT, GENERATORS, PROMPTS, procedural_latents, train
from ptdit.contract.files import file_sha256


def test_training_is_deterministic_and_learns():
    logged: list[str] = []
    first, second = (train(iterations=4, batch=4, log=logged.append).state_dict() for _ in range(2))
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    untrained = __import__("ptdit").PTDiT(__import__("ptdit").preset("tiny"), seed=0).state_dict()
    assert not all(torch.equal(first[k], untrained[k]) for k in first)
    assert logged and "loss" in logged[-1]


def test_the_committed_checkpoint_is_the_one_its_record_names():
    record = json.loads(CHECKPOINT.with_suffix(".json").read_text())
    assert record["sha256"] == file_sha256(CHECKPOINT)
    assert record["prompts"] == list(PROMPTS) and record["preset"] == "tiny"
    assert "python -m bench.train_tiny" in record["command"]
    assert CHECKPOINT.stat().st_size < 3_000_000


def test_each_prompt_has_a_generator_of_structured_latents():
    import numpy as np

    rng = np.random.default_rng(0)
    latents = procedural_latents(np.arange(len(GENERATORS)), rng)
    assert latents.shape == (len(PROMPTS), 4, 32, 32) and latents.dtype == np.float32
    assert all(latents[i].std() > 0.05 for i in range(len(PROMPTS)))  # not flat: each has structure
