"""What PTDiTPipeline gives back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from PIL.Image import Image


@dataclass
class PTDiTPipelineOutput:
    """images: a list of PIL images ("pil"), float32 [n, H, W, 3] in [0, 1] ("np"), or None ("latent", or a video
    folder); frames (a video folder): per video, a list of its 1 + 4 (F - 1) PIL frames ("pil"), or float32
    [n, frames, H, W, 3] in [0, 1] ("np"), else None; latents: float32 [n, C, H, W] (video [n, C, F, H, W]),
    always; timings: seconds per stage, summed over the images or videos (encode, sample, decode); backends:
    what ran each component."""

    images: list[Image] | np.ndarray | None
    latents: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)
    backends: dict[str, str] = field(default_factory=dict)
    frames: list[list[Image]] | np.ndarray | None = None
    transformer_calls: int = 0  # calls of the transformer (or its step graph) made, over all images; caching skips some


def pipeline_metadata(prompt: str, negative_prompt: str | None, pipeline: str, steps: int, guidance: float,
                      seed: int, height: int | None = None, width: int | None = None) -> dict[str, Any]:
    """What a run writes into its PNG's text chunks (a clip's tags): the same from a folder, a server and the
    OpenAI front, so the same seed gives the same bytes."""
    size = {"size": f"{width}x{height}"} if height is not None and width is not None else {}
    return {"prompt": prompt, "negative_prompt": negative_prompt if negative_prompt is not None else "",
            "pipeline": pipeline, "steps": steps, "cfg": guidance, "seed": seed, **size}
