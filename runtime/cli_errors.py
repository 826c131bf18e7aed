"""How the runtime's commands end: a one-line error on stderr and the exit code of the CLI conventions
(2 bad input, 1 failure, 130 interrupted); a traceback only with --debug."""

from __future__ import annotations

import contextlib
import sys
from typing import Iterator, NoReturn

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
