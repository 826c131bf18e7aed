"""PyTorch backend: the ptdit reference model rebuilt from an artifact's manifest (config, weights source,
proxy settings), run with the artifact's I/O contract. Inputs set once stay on the device."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ptdit.contract.dtypes import PRECISION_DTYPES
from ptdit.contract.errors import InputError, option
from ptdit.contract.fp8 import FP8

from ..artifact import Artifact
from ..errors import RuntimeFailure
from .feeds import HostFeeds
from .interface import ReuseTables, Session, StepLoop
from .transfers import Transfers


def build_reference(artifact: Artifact, precision: str | None = None, device: str = "cpu") -> Any:
    """The PyTorch model an artifact was exported from, in `precision` (default: the artifact's policy)."""
    import torch

    from ptdit import PTDiT, PTDiTConfig, load_checkpoint

    precision = precision or artifact.precision
    if precision not in PRECISION_DTYPES:
        raise InputError(f"unknown precision {precision!r}: use {', '.join(PRECISION_DTYPES)}")
    quantization = artifact.manifest.export.quantization
    if precision == FP8 and quantization is None:
        raise InputError(f"{artifact.path.name} has no FP8 scales to run PyTorch in fp8 with: use fp32 or "
                         f"{artifact.precision}")
    weights = artifact.model.weights
    if weights.source == "checkpoint" and not Path(str(weights.path)).is_file():
        raise InputError(f"the manifest's weights {weights.path} are not available here; copy the checkpoint there "
                         f"(sha256 {str(weights.sha256)[:12]}...)")
    try:
        cfg = PTDiTConfig.from_dict(artifact.model.config)
        model = PTDiT(cfg, seed=weights.seed or 0).eval().to(getattr(torch, PRECISION_DTYPES[precision]))
        loaded = load_checkpoint(model, str(weights.path)) if weights.source == "checkpoint" else None
    except InputError as e:
        raise InputError(f"cannot rebuild the PyTorch model of {artifact.path.name}: {e}") from None
    if loaded != weights.sha256:
        raise InputError(f"checkpoint {weights.path} is not the one {artifact.path.name} was exported from "
                         f"(sha256 differs)")
    if precision == FP8 and quantization is not None:  # the export's fake-quantized twin, at its scales
        from ptdit.fp8 import LayerScales, fake_quantize

        fake_quantize(model, {name: LayerScales(*pair) for name, pair in quantization.scales.items()})
    return model.to(device)


def component_reference(artifact: Artifact, precision: str, device: str) -> Any:
    """The PyTorch reference of a pipeline component (text encoder or VAE decoder) from its manifest."""
    import torch

    from ptdit.t5 import T5Config, T5Encoder, load_hf_t5
    from ptdit.vae import CausalVAEDecoder, VAEConfig, load_vae

    info = artifact.model
    weights = info.weights
    if weights.source == "checkpoint" and not Path(str(weights.path)).exists():
        raise InputError(f"the manifest's weights {weights.path} are not available here; copy them there")
    model: torch.nn.Module
    if info.kind == "t5":
        model = (load_hf_t5(str(weights.path)) if weights.source == "checkpoint"
                 else T5Encoder(T5Config.from_dict(info.config), seed=weights.seed or 0))
    else:
        model = (load_vae(str(weights.path)) if weights.source == "checkpoint"
                 else CausalVAEDecoder(VAEConfig.from_dict(info.config), seed=weights.seed or 0))
    return model.eval().to(getattr(torch, PRECISION_DTYPES[precision])).to(device)


def reference_module(artifact: Artifact, precision: str | None = None, device: str = "cpu") -> Any:
    """build_reference, wrapped in the whole denoising step (ptdit.step.DenoisingStep) for a step artifact; a
    pipeline component's own reference."""
    if artifact.model.kind != "ptdit":
        return component_reference(artifact, precision or artifact.precision, device)
    model = build_reference(artifact, precision, device)
    if not artifact.is_step:
        return model
    from ptdit.step import DenoisingStep

    return DenoisingStep(model)


class TorchSession(Session):
    def __init__(self, artifact: Artifact, device: str = "auto", precision: str | None = None):
        import torch

        if device == "cuda" and not torch.cuda.is_available():
            raise InputError(f"{option('device', 'cuda')} needs a CUDA build of torch and a GPU; use "
                             f"{option('device', 'cpu')}")
        self.device = "cuda" if device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
        self.artifact = artifact
        self.precision = precision or artifact.precision
        self.model = reference_module(artifact, self.precision, self.device)
        self.backend = f"torch ({self.device}, {self.precision})"
        self.output_names = [t.name for t in artifact.outputs]
        self.transfers = Transfers()
        self.feeds = HostFeeds(artifact.inputs)
        self.staged: dict[str, Any] = {}  # the inputs, as tensors on the device

    def set_inputs(self, feeds: Mapping[str, Any]) -> None:
        import torch

        for name, value in self.feeds.update(feeds).items():
            self.staged[name] = torch.from_numpy(value).to(self.device)
            self.transfers.to_device_bytes += value.nbytes

    def forward(self, blocks: bool = False) -> tuple[list[Any], list[Any]]:
        """(outputs in the artifact's order, block outputs) as device tensors."""
        import torch

        self.feeds.complete()
        args = [self.staged[t.name] for t in self.artifact.inputs]
        with torch.no_grad():
            out = self.model(*args, return_block_outputs=blocks) if blocks else self.model(*args)
        if isinstance(out, torch.Tensor):
            return [out], []
        if len(out) == 2 and isinstance(out[1], list):  # PTDiT: (noise_pred, blocks)
            return [out[0]], out[1]
        n = len(self.output_names)  # DenoisingStep: (latent_next, step_next, *blocks)
        return list(out[:n]), list(out[n:])

    def to_host(self, values: list[Any]) -> list[np.ndarray]:
        """Device tensors on the host (counted), floats as fp32."""
        host = [v.float().cpu().numpy() if v.is_floating_point() else v.cpu().numpy() for v in values]
        self.transfers.from_device_bytes += sum(v.nbytes for v in host)
        if self.device == "cuda":
            self.transfers.syncs += 1
        return host

    def run(self) -> dict[str, np.ndarray]:
        outputs, _ = self.forward()
        return dict(zip(self.output_names, self.to_host(outputs)))

    def run_with_blocks(self) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
        """The outputs and every transformer block's output (window-major [B, nW, P, C], as fp32)."""
        outputs, blocks = self.forward(blocks=True)
        return dict(zip(self.output_names, self.to_host(outputs))), [b.float().cpu().numpy() for b in blocks]

    def step_loop(self, carry: Mapping[str, str]) -> TorchStepLoop:
        return TorchStepLoop(self, carry)

    def close(self) -> None:
        self.model = None


class TorchStepLoop(StepLoop):
    """The step module's outputs become its next inputs as device tensors; nothing goes to the host per step. A
    skipped step is the reuse graph's arithmetic (ptdit.contract.reuse_graphs) in torch, on the same tensors."""

    def __init__(self, session: TorchSession, carry: Mapping[str, str]):
        self.session, self.carry = session, dict(carry)
        self.tables: dict[str, Any] = {}
        self.velocities: list[Any] = []  # [slot 0, slot 1]: computed step k's velocity went to slot k % 2
        self.computed = 0

    def start(self, feeds: Mapping[str, np.ndarray], reuse: ReuseTables | None = None) -> None:
        import torch

        s = self.session
        s.set_inputs(feeds)
        self.tables, self.computed = {}, 0
        if reuse is not None:
            self.tables = {name: torch.from_numpy(v).to(s.device) for name, v in reuse.arrays().items()}
            zeros = torch.zeros(s.staged["latent"].shape, dtype=torch.float32, device=s.device)
            self.velocities = [zeros, zeros]
            s.transfers.to_device_bytes += sum(v.nbytes for v in reuse.arrays().values()) + 2 * zeros.nbytes

    def step(self, index: int) -> None:
        staged = self.session.staged
        latent, step = staged["latent"], staged["step"]
        outputs, _ = self.session.forward()
        produced = dict(zip(self.session.output_names, outputs))
        for name, output in self.carry.items():
            staged[name] = produced[output]
        if self.tables:
            moved = staged["latent"].float() - latent.float()
            self.velocities[self.computed % 2] = moved * self.tables["inverse_dt"].index_select(0, step)
            self.computed += 1

    def skip(self, index: int) -> None:
        if not self.tables or not self.computed:
            raise RuntimeFailure("a skipped step needs the loop started with reuse tables and a computed step first")
        staged, t = self.session.staged, self.tables
        step = staged["step"]
        along_a = self.velocities[(self.computed - 1) % 2] * t["weight_a"].index_select(0, step)
        along_b = self.velocities[self.computed % 2] * t["weight_b"].index_select(0, step)
        staged["latent"] = staged["latent"] + (along_a + along_b)
        staged["step"] = step + 1

    def finish(self) -> np.ndarray:
        return self.session.to_host([self.session.staged["latent"]])[0]

    def close(self) -> None:
        self.tables.clear()
        self.velocities.clear()
