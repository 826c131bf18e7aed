"""How every command ends, whichever stage it belongs to (docs/ARCHITECTURE.md, "Command-line conventions").

Exit 0 on success, 2 on bad input (InputError: the message names the bad value and the fix), 1 when the work
failed (Failure and its stage-specific kinds, a write the disk refused), 130 on Ctrl-C and 143 on SIGTERM. One
line on stderr, which says truly what was written (ptdit.contract.outputs publishes only at the end); a traceback
only with --debug.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator, Mapping, NoReturn

from .errors import PIP_NAMES, Failure, InputError, flag_of
from .interrupts import exit_code_of, sigterm_interrupts
from .outputs import forget_published, published, shown


def fail(prog: str, code: int, message: str) -> NoReturn:
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def what_was_written() -> str:
    done = published()
    if not done:
        return "nothing was written"
    return f"written before that: {', '.join(str(p) for p in done)}"


@contextlib.contextmanager
def exit_codes(prog: str, debug: bool = False, writes: bool = True, leave_at_once: bool = False,
               flags: Mapping[str, str] | None = None) -> Iterator[None]:
    """The body of a command: its expected errors become one line and the exit code of the conventions, and
    SIGTERM stops it as Ctrl-C does. `writes`: the command writes files, so its failures say what was written.
    `leave_at_once`: an interrupt exits without waiting for worker threads (a TensorRT build winding down in
    native code). `flags`: the command's flags for the parameters an InputError names where they are not
    `--` + the name with dashes (guidance -> --cfg)."""
    named = dict(flags or {})
    forget_published()

    def written() -> str:
        return f"; {what_was_written()}" if writes else ""

    try:
        with sigterm_interrupts():
            yield
    except InputError as e:
        fail(prog, 2, e.render(lambda name: named.get(name) or flag_of(name)))
    except Failure as e:
        fail(prog, 1, f"{e}{written()}")
    except KeyboardInterrupt as e:
        code = exit_code_of(e)
        message = f"{'terminated' if code == 143 else 'interrupted'}{written()}"
        if leave_at_once:
            print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
            os._exit(code)
        fail(prog, code, message)
    except ModuleNotFoundError as e:
        if debug:
            raise
        name = (e.name or "").split(".")[0]
        fail(prog, 2, f"missing package '{name}': install it with pip install {PIP_NAMES.get(name, name)}")
    except OSError as e:  # a write the disk refused (full, read-only, gone): its reason, in one line
        if debug:
            raise
        where = f"{shown(e.filename)}: " if e.filename else ""
        fail(prog, 1, f"{where}{e.strerror or e}{written()}")
    except Exception as e:  # unexpected: one line unless --debug
        if debug:
            raise
        fail(prog, 1, f"{type(e).__name__}: {e} (rerun with --debug for the traceback)")
