"""A small trained model to measure on: the `tiny` preset trained with rectified flow on procedural latents.

    python -m bench.train_tiny --out bench/data/tiny-trained.safetensors

The seeded weights follow no timestep smoothly (the seeded tiny's guided prediction changes by a median 53 % from
one step to the next over 30 steps), so what step caching or FP8 does on them says nothing about a trained model.
This trains `tiny` for a few minutes on this CPU, deterministically, on 256 px latents (32 x 32, 4 channels) drawn by
a handful of procedural generators (shapes, stripes, gradients, checkers, rings, blobs), each conditioned on one
prompt's features from the pipeline's own text encoder (the seeded stand-in T5 and tokenizer of `ptdit-export
--pipeline`), with the empty prompt as the unconditional 10 % of the time, as classifier-free guidance is trained. It
is not an image model: it learned six latent families, enough to behave like a trained DiT along a trajectory.

Rectified flow as the published sampler integrates it: x_t = (1 - t) x0 + t noise with t in [0, 1] (timestep
1000 t), and the model predicts the velocity x0 - noise in its first 4 output channels.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np

PROMPTS = (
    "a bright disk on a dark ground",
    "horizontal stripes",
    "a smooth diagonal gradient",
    "a checkerboard",
    "concentric rings",
    "soft blobs",
)
SIDE = 32  # the latent of 256 px
CHANNELS = 4
TEXT_LEN = 200  # ptdit-export's default --text-len
DEFAULT_ITERATIONS = 2400
CHECKPOINT_TEXT = "bench/data/tiny-trained.safetensors"
CHECKPOINT = Path(__file__).parent / "data" / "tiny-trained.safetensors"

Generator = Callable[[np.random.Generator, np.ndarray, np.ndarray], np.ndarray]


def _colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A foreground and a background value per channel."""
    return rng.uniform(-1.5, 1.5, CHANNELS), rng.uniform(-1.5, 1.5, CHANNELS)


def _mix(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    fg, bg = _colours(rng)
    return bg[:, None, None] + (fg - bg)[:, None, None] * mask[None]


def disk(rng: np.random.Generator, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    cy, cx, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.12, 0.3)
    return _mix(1 / (1 + np.exp(((y - cy) ** 2 + (x - cx) ** 2) ** 0.5 / 0.02 - r / 0.02)), rng)


def stripes(rng: np.random.Generator, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    return _mix(0.5 + 0.5 * np.sin(2 * math.pi * rng.uniform(2, 5) * y + rng.uniform(0, 2 * math.pi)), rng)


def gradient(rng: np.random.Generator, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (math.cos(angle) * (x - 0.5) + math.sin(angle) * (y - 0.5)) / math.sqrt(0.5) + 0.5
    return _mix(np.clip(ramp, 0, 1), rng)


def checker(rng: np.random.Generator, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    n = rng.integers(2, 6)
    return _mix(((np.floor(y * n) + np.floor(x * n)) % 2).astype(np.float32), rng)


def rings(rng: np.random.Generator, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    cy, cx = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7)
    radius = ((y - cy) ** 2 + (x - cx) ** 2) ** 0.5
    return _mix(0.5 + 0.5 * np.cos(2 * math.pi * rng.uniform(3, 7) * radius), rng)


def blobs(rng: np.random.Generator, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    field = np.zeros_like(y)
    for _ in range(4):
        cy, cx, s = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.08, 0.2)
        field += rng.choice([-1.0, 1.0]) * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * s * s))
    return _mix(np.clip(0.5 + 0.5 * field, 0, 1), rng)


GENERATORS: tuple[Generator, ...] = (disk, stripes, gradient, checker, rings, blobs)


def procedural_latents(classes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One [4, 32, 32] latent per class index, drawn by that class's generator."""
    y, x = np.meshgrid(np.linspace(0, 1, SIDE), np.linspace(0, 1, SIDE), indexing="ij")
    return np.stack([GENERATORS[c](rng, y, x) for c in classes]).astype(np.float32)


def prompt_features() -> tuple[np.ndarray, np.ndarray]:
    """The prompts, then the empty prompt, through the seeded text encoder of ptdit-export --pipeline: [7, L, D]."""
    from export.options import PipelineOptions
    from export.pipeline.components import encode_prompts, text_encoder

    encoder, tokenizer, _ = text_encoder(PipelineOptions())
    return encode_prompts(encoder, tokenizer, TEXT_LEN, [*PROMPTS, ""])


def train(iterations: int, batch: int = 16, seed: int = 0, log: Callable[[str], None] = print) -> object:
    import torch

    from ptdit import PTDiT
    from ptdit.config import PRESETS

    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(seed)
    embeds, masks = (torch.from_numpy(a) for a in prompt_features())
    masks = masks.to(torch.int64)
    model = PTDiT(PRESETS["tiny"], seed=seed).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-3, total_steps=iterations, pct_start=0.05)
    start = time.perf_counter()
    for it in range(iterations):
        classes = rng.integers(0, len(PROMPTS), batch)
        x0 = torch.from_numpy(procedural_latents(classes, rng))
        noise = torch.from_numpy(rng.standard_normal(x0.shape).astype(np.float32))
        t = torch.from_numpy(rng.uniform(0, 1, batch).astype(np.float32))
        text = np.where(rng.uniform(0, 1, batch) < 0.1, len(PROMPTS), classes)  # the empty prompt: uncond
        xt = (1 - t)[:, None, None, None] * x0 + t[:, None, None, None] * noise
        pred = model(xt, t * 1000, embeds[text], masks[text])
        assert isinstance(pred, torch.Tensor)
        loss = torch.nn.functional.mse_loss(pred[:, :CHANNELS], x0 - noise)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if it % 100 == 0 or it == iterations - 1:
            log(f"iteration {it + 1}/{iterations}: loss {loss.item():.4f} ({time.perf_counter() - start:.0f} s)")
    return model.eval()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=f"example: python -m bench.train_tiny --out {CHECKPOINT_TEXT}")
    parser.add_argument("--out", type=Path, default=CHECKPOINT, help="the checkpoint (.safetensors) [%(default)s]")
    parser.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS, help="[%(default)s]")
    args = parser.parse_args(argv)
    if args.out.suffix != ".safetensors":
        parser.error(f"--out {args.out}: name a .safetensors file")
    import torch

    from ptdit.checkpoint import save_checkpoint
    from ptdit.contract.files import file_sha256

    torch.set_num_threads(max(1, torch.get_num_threads()))
    began = time.perf_counter()
    model = train(args.iterations)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_name(args.out.stem + ".partial.safetensors")  # save_checkpoint goes by the suffix
    save_checkpoint(model, partial)  # type: ignore[arg-type]
    partial.replace(args.out)
    record = {"preset": "tiny", "iterations": args.iterations, "prompts": list(PROMPTS), "text_len": TEXT_LEN,
              "resolution": 256, "command": f"python -m bench.train_tiny --out {args.out} --iterations "
              f"{args.iterations}", "seconds": round(time.perf_counter() - began, 1),
              "sha256": file_sha256(args.out)}
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out} ({record['seconds']} s)")


if __name__ == "__main__":
    main()
