"""Reading the array files users hand every stage (text features, calibration text, a folder's negative prompt):
numpy is imported when a file is read."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .errors import InputError

if TYPE_CHECKING:
    import numpy as np


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an .npy (under the key ""), .npz or .safetensors file. A file cut short, or of another kind
    under that name, is refused in one line (numpy and safetensors raise a different error for each)."""
    import numpy as np

    try:
        if path.suffix == ".npy":
            return {"": np.load(path, allow_pickle=False)}
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                return {k: archive[k] for k in archive.files}
        from safetensors.numpy import load_file

        return load_file(str(path))
    except Exception as e:  # BadZipFile, EOFError, ValueError, OSError, SafetensorError...
        raise InputError(f"{path} is not a readable {path.suffix} file ({type(e).__name__}: {e}); write it again, "
                         f"or re-export the artifact it belongs to") from None
