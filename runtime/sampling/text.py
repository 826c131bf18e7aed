"""Text conditioning: the T5 features of the conditional and unconditional branches, from files (--text,
--negative-text), seeded at random (--random-text), or encoded by a pipeline folder's text encoder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ptdit.contract.arrays import read_arrays
from ptdit.contract.errors import InputError, option


@dataclass(frozen=True)
class TextConditioning:
    """Text features for the conditional and unconditional branches: embeds [2, L, D], mask [2, L]."""

    embeds: np.ndarray
    mask: np.ndarray
    source: str


def load_text(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Features [L, D], [1, L, D] or a guidance pair [2, L, D] (cond, uncond) -> ([n, L, D], mask [n, L]):
    .npy holds the features (mask all ones), .npz or .safetensors the keys text_embeds and optionally
    text_mask."""
    path = Path(path)
    if path.suffix not in (".npy", ".npz", ".safetensors"):
        raise InputError(f"text features must be .npy, .npz or .safetensors, got {path.name}")
    if not path.is_file():
        raise InputError(f"text features file {path} does not exist")
    data = read_arrays(path)
    if path.suffix == ".npy":
        embeds, mask = data[""], None
    else:
        if "text_embeds" not in data:
            raise InputError(f"{path} has no 'text_embeds' entry (found {sorted(data)})")
        embeds, mask = data["text_embeds"], data.get("text_mask")
    check_finite(embeds, f"text features in {path}")
    if embeds.ndim == 2:
        embeds = embeds[None]
    if embeds.ndim != 3 or embeds.shape[0] not in (1, 2):
        raise InputError(f"text features in {path} must be [L, D], [1, L, D] or [2, L, D] (cond, uncond), "
                         f"got {list(embeds.shape)}")
    n, length = embeds.shape[:2]
    mask = np.ones((n, length), dtype=np.int64) if mask is None else np.asarray(mask)
    if mask.size != n * length:
        raise InputError(f"text mask in {path} has shape {list(mask.shape)}, the features need {[n, length]}")
    return embeds.astype(np.float32), mask.reshape(n, length).astype(np.int64)


def non_finite(values: np.ndarray) -> int:
    """How many of `values` are NaN or infinite (0 for integer arrays)."""
    if not np.issubdtype(values.dtype, np.floating):
        return 0
    return int(values.size - np.isfinite(values).sum())


def check_finite(values: np.ndarray, what: str) -> None:
    """NaN or inf in the conditioning would run the whole sampler and fail at the end: refuse it up front."""
    bad = non_finite(values)
    if bad:
        raise InputError(f"{what} hold {bad} NaN or infinite values; the model needs finite features")


def make_conditioning(text_len: int, text_dim: int, cond: tuple[np.ndarray, np.ndarray] | None = None,
                      uncond: tuple[np.ndarray, np.ndarray] | None = None, random_seed: int | None = None,
                      source: str = "", names: tuple[str, str] = ("text", "negative_text")) -> TextConditioning:
    """The (cond, uncond) pair from load_text results. Without a negative, the unconditional branch gets zero
    features with one unmasked token (a pipeline folder encodes the empty prompt instead)."""
    if random_seed is not None:
        rng = np.random.default_rng(random_seed)
        embeds = rng.standard_normal((2, text_len, text_dim), dtype=np.float32)
        mask = np.ones((2, text_len), dtype=np.int64)
        return TextConditioning(embeds, mask, f"random (seed {random_seed})")
    if cond is None:
        raise InputError(f"no text features: pass {option('text')} (a features file), {option('random_text', True)}, "
                         f"or a pipeline folder's prompt")
    if cond[0].shape[0] == 2:
        if uncond is not None:
            raise InputError(f"the text features already hold the (cond, uncond) pair; drop {option('negative_text')}")
        pairs = [(cond[0][0], cond[1][0]), (cond[0][1], cond[1][1])]
    else:
        default_uncond = (np.zeros((text_len, text_dim), np.float32), np.eye(1, text_len, dtype=np.int64)[0])
        pairs = [(cond[0][0], cond[1][0]), (uncond[0][0], uncond[1][0]) if uncond else default_uncond]
    for which, (embeds, _) in zip(names, pairs):  # the options the two came in
        check_finite(embeds, f"the features of {option(which)}")
        if embeds.shape != (text_len, text_dim):
            raise InputError(f"the features of {option(which)} are {list(embeds.shape)}; the artifact needs "
                             f"[{text_len}, {text_dim}] (export with ptdit-export --text-len {embeds.shape[0]} for "
                             f"this length)")
    return TextConditioning(np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]), source)
