"""Writing a sampled latent: .npy, or .safetensors with the run's settings as metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ptdit.contract.files import write_atomically


def save_latents(path: Path, latent: np.ndarray, metadata: dict[str, Any]) -> None:
    """.npy, or .safetensors with the run's settings as metadata; written to a temporary name first."""

    def write(tmp: Path) -> None:
        if path.suffix == ".safetensors":
            from safetensors.numpy import save_file

            save_file({"latent": np.ascontiguousarray(latent)}, str(tmp), metadata={k: str(v) for k, v in metadata.items()})
        else:
            with open(tmp, "wb") as f:
                np.save(f, latent)

    write_atomically(path, write)
