"""What the runtime's commands share: the options of a TensorRT plan's run, and the check of an output path.
(How they end is ptdit.contract.errors.exit_codes, as for every command.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ptdit.contract.cli_types import declared_options
from ptdit.contract.errors import InputError

from ..run_options import TENSORRT_RUN


def tensorrt_options(command: Any) -> Any:
    """The options of a TensorRT plan's run (--runtime-cache-dir, --lean-runtime, --weight-budget), as declared."""
    return declared_options(TENSORRT_RUN)(command)


def check_out(out_path: Path, suffixes: tuple[str, ...]) -> None:
    """--out ends in one of `suffixes` (whether it may be written: ptdit.contract.outputs, when it is claimed)."""
    if out_path.suffix not in suffixes:
        raise InputError(f"--out must end in {' or '.join(suffixes)}, got {out_path.name}")
