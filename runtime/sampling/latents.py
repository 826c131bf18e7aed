"""Writing a sampled latent: .npy, or .safetensors with the run's settings as metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def save_latents(path: Path, latent: np.ndarray, metadata: dict[str, Any]) -> None:
    """.npy, or .safetensors with the run's settings as metadata (the kind by the suffix of `path`, which may be
    the temporary name of the output)."""
    if path.suffix == ".safetensors":
        from safetensors.numpy import save_file

        save_file({"latent": np.ascontiguousarray(latent)}, str(path), metadata={k: str(v) for k, v in metadata.items()})
    else:
        with open(path, "wb") as f:
            np.save(f, latent)
