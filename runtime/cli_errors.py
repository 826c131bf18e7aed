"""What the runtime's commands share: how they end (a one-line error on stderr and the exit code of the CLI
conventions: 2 bad input, 1 failure, 130 interrupted; a traceback only with --debug), and the options of a
TensorRT plan's run."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any, Iterator, NoReturn

import click

from .errors import InputError, RuntimeFailure


def fail(prog: str, code: int, message: str) -> NoReturn:
    click.echo(f"{prog}: error: {message}", err=True)
    sys.exit(code)


@contextlib.contextmanager
def exit_codes(prog: str, debug: bool, nothing_written: bool = True) -> Iterator[None]:
    suffix = "; nothing was written" if nothing_written else ""
    try:
        yield
    except InputError as e:
        fail(prog, 2, str(e))
    except RuntimeFailure as e:
        fail(prog, 1, f"{e}{suffix}")
    except KeyboardInterrupt:
        fail(prog, 130, f"interrupted{suffix}")
    except Exception as e:  # unexpected: one line unless --debug
        if debug:
            raise
        fail(prog, 1, f"{type(e).__name__}: {e} (rerun with --debug for the traceback)")


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
            return int(float(text[: len(text) - len(unit)]) * _UNITS[unit])
        except ValueError:
            self.fail(f"{value!r} is not a byte count (e.g. 2147483648, 512M, 2G)", param, ctx)


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
