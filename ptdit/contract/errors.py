"""How every command ends, whichever stage it belongs to (docs/ARCHITECTURE.md, "Command-line conventions").

Exit 0 on success, 2 on bad input (InputError: the message names the bad value and the fix), 1 when the work
failed (Failure and its stage-specific kinds), 130 when interrupted. One line on stderr; a traceback only with
--debug.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator, NoReturn


class InputError(ValueError):
    """Bad input or environment: an unsupported value, a wrong or foreign file, a missing package, a plan for
    another GPU. The message names the problem and the fix. Exit code 2."""


class Failure(RuntimeError):
    """The work itself failed (a check, a build, a backend run). Exit code 1."""


# Import names whose pip package is called otherwise (ModuleNotFoundError names the import).
PIP_NAMES = {"onnxruntime": "onnxruntime-gpu", "onnx_ir": "onnx-ir", "tensorrt_rtx": "tensorrt-rtx-cu13",
             "cuda": "cuda-python", "PIL": "pillow"}


def fail(prog: str, code: int, message: str) -> NoReturn:
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


@contextlib.contextmanager
def exit_codes(prog: str, debug: bool = False, nothing_written: bool = True,
               leave_at_once: bool = False) -> Iterator[None]:
    """The body of a command: its expected errors become one line and the exit code of the conventions.
    `nothing_written`: a failure or an interrupt says that nothing was left behind (the command's outputs are
    published only at the end). `leave_at_once`: an interrupt exits without waiting for worker threads (a
    TensorRT build winding down in native code)."""
    suffix = "; nothing was written" if nothing_written else ""
    try:
        yield
    except InputError as e:
        fail(prog, 2, str(e))
    except Failure as e:
        fail(prog, 1, f"{e}{suffix}")
    except KeyboardInterrupt:
        if leave_at_once:
            print(f"{prog}: error: interrupted{suffix}", file=sys.stderr, flush=True)
            os._exit(130)
        fail(prog, 130, f"interrupted{suffix}")
    except ModuleNotFoundError as e:
        if debug:
            raise
        name = (e.name or "").split(".")[0]
        fail(prog, 2, f"missing package '{name}': install it with pip install {PIP_NAMES.get(name, name)}")
    except Exception as e:  # unexpected: one line unless --debug
        if debug:
            raise
        fail(prog, 1, f"{type(e).__name__}: {e} (rerun with --debug for the traceback)")
