"""What the runtime's commands share: the options of a TensorRT plan's run, byte sizes, and the check of an
output path. (How they end is ptdit.contract.errors.exit_codes, as for every command.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ptdit.contract.errors import InputError

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


class ByteSize(click.ParamType):
    """A byte count: 2147483648, or with a binary unit: 512M, 2G."""

    name = "BYTES"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().upper().removesuffix("IB").removesuffix("B")
        unit = text[-1] if text and text[-1] in _UNITS else ""
        try:
            count = int(float(text[: len(text) - len(unit)]) * _UNITS[unit])
        except (ValueError, OverflowError):  # not a number, NaN, inf
            count = 0
        if count < 1:
            self.fail(f"{value!r} is not a positive byte count (e.g. 2147483648, 512M, 2G)", param, ctx)
        return count


TENSORRT_OPTIONS = [
    click.option("--runtime-cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                 help="TensorRT-RTX plans: where the JIT runtime cache is kept [default: next to the plan]."),
    click.option("--lean-runtime", type=click.Path(dir_okay=False, path_type=Path), default=None,
                 help="libnvinfer_lean of the TensorRT that built a version-compatible plan with "
                      "--exclude-lean-runtime."),
    click.option("--weight-budget", type=ByteSize(), default=None,
                 help="Plans built with --weight-streaming: bytes of weights kept on the GPU (e.g. 2G); the rest "
                      "stream from host memory."),
]


def tensorrt_options(command: Any) -> Any:
    """The options of a TensorRT plan's run (--runtime-cache-dir, --lean-runtime, --weight-budget)."""
    for option in reversed(TENSORRT_OPTIONS):
        command = option(command)
    return command


def check_out(out_path: Path, suffixes: tuple[str, ...]) -> None:
    """--out ends in one of `suffixes` (whether it may be written: ptdit.contract.outputs, when it is claimed)."""
    if out_path.suffix not in suffixes:
        raise InputError(f"--out must end in {' or '.join(suffixes)}, got {out_path.name}")
