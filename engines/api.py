"""ptdit-build from Python: keyword options, a typed result, progress through a callback or `logging`.

    from engines import build_engine

    engine = build_engine("artifacts/ptdit-tiny-256-b2-fp16.onnx", target="rtx")    # no GPU needed
    engine.path, engine.manifest.targets.compute_capabilities, engine.up_to_date

A plan already there, built from the same ONNX with the same options, builder and targets, is reused
(up_to_date); a stale one is refused unless force=True. Errors are InputError (a ValueError) naming these
parameters, or BuildError when TensorRT fails.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ptdit.contract.arguments import checked
from ptdit.contract.plan_manifest import BuildOptions
from ptdit.contract.progress import Reporter

if TYPE_CHECKING:
    from .build import BuildResult

LOG = logging.getLogger("engines")
DEFAULTS = BuildOptions()


@checked
def build_engine(onnx: str | Path, *, target: str = "auto", compute_capabilities: str | Sequence[str] = (),
                 out_dir: str | Path | None = None, workspace_gib: float = DEFAULTS.workspace_gib,
                 opt_level: int = DEFAULTS.opt_level, tiling_level: str | None = None,
                 timing_cache: str | Path | None = None, version_compatible: bool = False,
                 exclude_lean_runtime: bool = False, refittable: bool = False, strip_plan: bool = False,
                 weight_streaming: bool = False, fp16_weak: bool = False, allow_fp32: bool = False,
                 mark_blocks: bool = False, triton_repo: str | Path | None = None, force: bool = False,
                 progress: Reporter | None = None) -> BuildResult:
    """Build a TensorRT plan from an ONNX of ptdit-export, as ptdit-build does; a BuildResult with .path (the
    plan), .manifest (the typed plan manifest), .manifest_path, .up_to_date and .triton_model. target: auto,
    tensorrt (full TensorRT 10.x / 11.x, on the GPU the plan is for) or rtx (TensorRT-RTX, no GPU needed);
    compute_capabilities: TensorRT-RTX targets, "8.9,12.0", ["8.9", "12.0"] or "current". progress: called with
    each line of progress (default: the `engines` logger, at INFO)."""
    from .build import build

    options = BuildOptions(workspace_gib, opt_level, _path(timing_cache), version_compatible, exclude_lean_runtime,
                           refittable, strip_plan, weight_streaming, fp16_weak, allow_fp32, mark_blocks, tiling_level)
    capabilities = (compute_capabilities,) if isinstance(compute_capabilities, str) else tuple(compute_capabilities)
    return build(Path(onnx), options, _path(out_dir), force, _path(triton_repo), progress or LOG.info, target,
                 capabilities)


def _path(value: str | Path | None) -> Path | None:
    return Path(value) if value is not None else None
