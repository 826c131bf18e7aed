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
from typing import TYPE_CHECKING, Any

from ptdit.contract.arguments import checked
from ptdit.contract.progress import Reporter

from .options import BUILD, build_options

if TYPE_CHECKING:
    from .build import BuildResult

LOG = logging.getLogger("engines")


@checked(options=BUILD)
def build_engine(onnx: str | Path, *, progress: Reporter | None = None, **options: Any) -> BuildResult:
    """Build a TensorRT plan from an ONNX of ptdit-export, as ptdit-build does; a BuildResult with .path (the
    plan), .manifest (the typed plan manifest), .manifest_path, .up_to_date and .triton_model. target: auto,
    tensorrt (full TensorRT 10.x / 11.x, on the GPU the plan is for) or rtx (TensorRT-RTX, no GPU needed);
    compute_capabilities: TensorRT-RTX targets, "8.9,12.0", ["8.9", "12.0"] or "current". The keywords are
    ptdit-build's options (engines.options.BUILD: the flag --workspace is workspace_gib=...). progress: called with
    each line of progress (default: the `engines` logger, at INFO)."""
    from .build import build

    capabilities = options["compute_capabilities"]
    return build(Path(onnx), build_options(options), _path(options["out_dir"]), options["force"],
                 _path(options["triton_repo"]), progress or LOG.info, options["target"],
                 (capabilities,) if isinstance(capabilities, str) else tuple(capabilities))


def _path(value: str | Path | None) -> Path | None:
    return Path(value) if value is not None else None
