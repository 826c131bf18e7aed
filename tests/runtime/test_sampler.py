"""The sampler: the published schedule, the Euler update with guidance, determinism, backend agreement."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from conftest import artifact_copy
from ptdit.contract.errors import InputError
from ptdit.contract.onnx_manifest import (
    ArtifactFiles,
    BlockOutputs,
    ExportInfo,
    ModelInfo,
    OnnxManifest,
    TensorSpec,
    Weights,
)
from runtime.artifact import Artifact
from runtime.backends.transfers import Transfers
from runtime.sampling.host_loop import Sampler
from runtime.sampling.schedule import schedule, timestep_shift
from runtime.sampling.text import load_text, make_conditioning
from runtime.session import open_session


def test_published_shift_and_schedule():
    assert timestep_shift(512, 512, None) == 1.0 and timestep_shift(1024, 1024, None) == 2.0
    assert timestep_shift(256, 256, None) == 0.5
    # 8 latent frames = 29 pixel frames: sqrt(29 // 17 * 5) = sqrt(5), rounded to bf16 as the published code has it
    assert timestep_shift(512, 512, 8) == 2.234375 == pytest.approx(np.sqrt(29 // 17 * 5), rel=2 ** -8)
    np.testing.assert_allclose(schedule(4, 1.0), [1000, 750, 500, 250])
    t = schedule(4, 2.0)
    np.testing.assert_allclose(t, [1000, 2 * 0.75 / 1.75 * 1000, 2 * 0.5 / 1.5 * 1000, 2 * 0.25 / 1.25 * 1000])
    assert np.all(np.diff(t) < 0)


class ConstantVelocity:
    """A stand-in model (outside the unit under test): predicts `cond` for the conditional branch and `uncond`
    for the unconditional one, in every channel, and records what it was given."""

    def __init__(self, batch: int, cond: float = 1.0, uncond: float = -1.0):
        inputs = [TensorSpec("latent", (batch, 4, 8, 8), "float32"), TensorSpec("timestep", (batch,), "float32"),
                  TensorSpec("text_embeds", (batch, 3, 5), "float32"), TensorSpec("text_mask", (batch, 3), "int64")]
        manifest = OnnxManifest(
            artifact=ArtifactFiles("fake.onnx", None, {}), model=ModelInfo({}, 0, Weights("seeded", seed=0)),
            export=ExportInfo("fp32", batch, 18, None, "", {}, resolution=512),
            geometry=None, inputs=inputs, outputs=[TensorSpec("noise_pred", (batch, 8, 8, 8), "float32")],
            block_outputs=BlockOutputs([]), checks={})
        self.artifact = Artifact(Path("fake.onnx"), manifest)
        self.backend, self.batch, self.values = "constant", batch, (cond, uncond)
        self.transfers = Transfers()
        self.fed: dict = {}
        self.timesteps: list[float] = []

    def set_inputs(self, feeds):
        self.fed.update(feeds)

    def run(self):
        self.timesteps.append(float(self.fed["timestep"][0]))
        out = np.empty((self.batch, 8, 8, 8), np.float32)
        if self.batch == 2:
            out[0], out[1] = self.values
        else:  # which branch: the unconditional text has the one-token mask
            out[:] = self.values[1] if self.fed["text_mask"].sum() == 1 else self.values[0]
        return {"noise_pred": out}

    def close(self):
        pass


@pytest.mark.parametrize("batch", [2, 1])
def test_euler_with_guidance_integrates_the_velocity(batch):
    model = ConstantVelocity(batch, cond=1.0, uncond=-1.0)
    text = make_conditioning(3, 5, (np.ones((1, 3, 5), np.float32), np.ones((1, 3), np.int64)))
    sampler = Sampler(model, steps=5, guidance=3.0, seed=1)
    start = np.random.default_rng(1).standard_normal((1, 4, 8, 8), dtype=np.float32)
    result = sampler.sample(text)
    velocity = -1.0 + 3.0 * (1.0 - -1.0)  # uncond + g (cond - uncond) = 5
    # The steps cover t from 1000 to 0: x moves by the velocity times 1 in total.
    np.testing.assert_allclose(result.latent, start + velocity, rtol=1e-5, atol=1e-5)
    expected_calls = list(np.repeat(sampler.timesteps, 2)) if batch == 1 else list(sampler.timesteps)
    np.testing.assert_allclose(model.timesteps, expected_calls, rtol=1e-6)
    assert len(result.steps) == 5


def test_sampling_is_deterministic_and_backends_agree(tmp_path):
    path = artifact_copy(tmp_path, "fp32")
    text = make_conditioning(200, 4096, random_seed=3)
    latents = {}
    for backend, seed in (("onnxruntime", 0), ("onnxruntime", 0), ("torch", 0), ("onnxruntime", 1)):
        session = open_session(str(path), backend, "cpu")
        latents.setdefault((backend, seed), []).append(Sampler(session, steps=4, seed=seed).sample(text).latent)
        session.close()
    a, b = latents[("onnxruntime", 0)]
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, latents[("torch", 0)][0], rtol=1e-4, atol=1e-4)
    assert not np.allclose(a, latents[("onnxruntime", 1)][0])


def test_batch_must_be_a_guidance_pair_or_one():
    model = ConstantVelocity(2)
    manifest = model.artifact.manifest
    model.artifact = replace(model.artifact, manifest=replace(manifest, export=replace(manifest.export, batch=4)))
    with pytest.raises(InputError, match="batch 2 .* or 1; this one has batch 4"):
        Sampler(model)


def test_text_files(tmp_path):
    rng = np.random.default_rng(0)
    features = rng.standard_normal((7, 16), dtype=np.float32)
    np.save(tmp_path / "a.npy", features[None])
    embeds, mask = load_text(tmp_path / "a.npy")
    np.testing.assert_array_equal(embeds, features[None])
    np.testing.assert_array_equal(mask, np.ones((1, 7)))
    from safetensors.numpy import save_file

    save_file({"text_embeds": features, "text_mask": (np.arange(7) < 3).astype(np.int64)},
              str(tmp_path / "b.safetensors"))
    assert load_text(tmp_path / "b.safetensors")[1].tolist() == [[1, 1, 1, 0, 0, 0, 0]]
    pair_mask = np.stack([np.ones(7), np.arange(7) < 2]).astype(np.int64)
    np.savez(tmp_path / "pair.npz", text_embeds=np.stack([features, -features]), text_mask=pair_mask)
    pair = make_conditioning(7, 16, load_text(tmp_path / "pair.npz"))
    np.testing.assert_array_equal(pair.embeds[1], -features)
    np.testing.assert_array_equal(pair.mask, pair_mask)
    with pytest.raises(InputError, match="drop negative_text"):
        make_conditioning(7, 16, load_text(tmp_path / "pair.npz"), load_text(tmp_path / "a.npy"))
    np.save(tmp_path / "three.npy", np.zeros((3, 7, 16), np.float32))
    with pytest.raises(InputError, match=r"\[2, L, D\] \(cond, uncond\), got \[3, 7, 16\]"):
        load_text(tmp_path / "three.npy")
    np.savez(tmp_path / "c.npz", features=features)
    with pytest.raises(InputError, match="has no 'text_embeds' entry"):
        load_text(tmp_path / "c.npz")
    np.savez(tmp_path / "d.npz", text_embeds=features, text_mask=np.ones(6))
    with pytest.raises(InputError, match=r"has shape \[6\], the features need \[1, 7\]"):
        load_text(tmp_path / "d.npz")
    (tmp_path / "e.npy").write_bytes(b"not numpy")
    with pytest.raises(InputError, match=r"e.npy is not a readable .npy file \(ValueError"):
        load_text(tmp_path / "e.npy")
    text = make_conditioning(7, 16, (features[None], np.ones((1, 7), np.int64)))
    assert text.embeds.shape == (2, 7, 16) and not text.embeds[1].any()
    assert text.mask[1].tolist() == [1, 0, 0, 0, 0, 0, 0]
