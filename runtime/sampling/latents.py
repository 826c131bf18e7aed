"""Writing a sampled latent: .npy, or .safetensors with the run's settings as metadata, read back before it is
published."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from ptdit.contract.errors import Failure
from ptdit.contract.outputs import shown, write_error


def save_latents(path: Path, latent: np.ndarray, metadata: dict[str, Any]) -> None:
    """.npy, or .safetensors with the run's settings as metadata (the kind by the suffix of `path`, which may be
    the temporary name of the output); a file that does not give the very latent back is a Failure."""
    try:  # serialized here and written in one write, so that a full disk is said in the disk's words
        if path.suffix == ".safetensors":
            from safetensors.numpy import save

            data = save({"latent": np.ascontiguousarray(latent)}, metadata={k: str(v) for k, v in metadata.items()})
        else:
            buffer = io.BytesIO()
            np.save(buffer, latent)
            data = buffer.getvalue()
        path.write_bytes(data)
    except OSError as e:
        raise write_error(e, path) from None
    if not np.array_equal(read_latent(path), latent):
        raise Failure(f"{shown(path)} was written but reads back another latent than was written")


def read_latent(path: Path) -> np.ndarray:
    try:
        if path.suffix == ".safetensors":
            from safetensors.numpy import load_file

            return load_file(str(path))["latent"]
        return np.load(path, allow_pickle=False)
    except Exception as e:  # numpy's and safetensors' own errors for a file they cannot read
        raise Failure(f"{shown(path)} was written but does not read back: {e}") from None
