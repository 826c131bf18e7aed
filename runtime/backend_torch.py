"""PyTorch backend: the ptdit reference model rebuilt from an artifact's manifest (config, weights source,
proxy settings), run with the artifact's I/O contract. Inputs set once stay on the device."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .artifact import Artifact
from .errors import InputError
from .tensors import HostFeeds

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def build_reference(artifact: Artifact, precision: str | None = None, device: str = "cpu") -> Any:
    """The PyTorch model an artifact was exported from, in `precision` (default: the artifact's policy)."""
    import torch

    from ptdit import PTDiT, PTDiTConfig, load_checkpoint
    from ptdit.errors import InputError as ModelInputError

    model_info = artifact.manifest["model"]
    precision = precision or artifact.precision
    if precision not in DTYPES:
        raise InputError(f"unknown precision {precision!r}: use fp32, fp16 or bf16")
    try:
        cfg = PTDiTConfig.from_dict(model_info["config"])
        weights = model_info["weights"]
        model = PTDiT(cfg, seed=int(weights.get("seed", 0))).eval().to(getattr(torch, DTYPES[precision]))
        if weights["source"] == "checkpoint":
            path = Path(weights["path"])
            if not path.is_file():
                raise InputError(f"the manifest's weights {path} are not available here; copy the checkpoint there "
                                 f"(sha256 {str(weights.get('sha256'))[:12]}...)")
            if load_checkpoint(model, path) != weights.get("sha256"):
                raise InputError(f"checkpoint {path} is not the one {artifact.path.name} was exported from "
                                 f"(sha256 differs)")
    except ModelInputError as e:
        raise InputError(f"cannot rebuild the PyTorch model of {artifact.path.name}: {e}") from None
    return model.to(device)


class TorchSession:
    def __init__(self, artifact: Artifact, device: str = "auto", precision: str | None = None):
        import torch

        if device == "cuda" and not torch.cuda.is_available():
            raise InputError("device cuda needs a CUDA build of torch and a GPU; use --device cpu")
        self.device = "cuda" if device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
        self.artifact = artifact
        self.precision = precision or artifact.precision
        self.model = build_reference(artifact, self.precision, self.device)
        self.backend = f"torch ({self.device}, {self.precision})"
        self._feeds = HostFeeds(artifact.inputs)
        self._staged: dict[str, Any] = {}

    def set_inputs(self, feeds: Mapping[str, Any]) -> None:
        import torch

        for name, value in self._feeds.update(feeds).items():
            self._staged[name] = torch.from_numpy(value).to(self.device)

    def _forward(self, blocks: bool) -> Any:
        import torch

        self._feeds.complete()
        args = [self._staged[t.name] for t in self.artifact.inputs]
        with torch.no_grad():
            return self.model(*args, return_block_outputs=blocks)

    def run(self) -> dict[str, np.ndarray]:
        return {"noise_pred": self._forward(blocks=False).float().cpu().numpy()}

    def run_with_blocks(self) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
        """The outputs and every transformer block's output (window-major [B, nW, P, C], as fp32)."""
        noise_pred, blocks = self._forward(blocks=True)
        return {"noise_pred": noise_pred.float().cpu().numpy()}, [b.float().cpu().numpy() for b in blocks]

    def close(self) -> None:
        self.model = None
