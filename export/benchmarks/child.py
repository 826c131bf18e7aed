"""The one way the benchmarks run a stage: `python -m <module> ...` in a child process, measured."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import click


@dataclass(frozen=True)
class ChildRun:
    seconds: float  # wall time
    peak_rss_bytes: int  # the child's own peak RSS (wait4)
    stdout: str


def run_module(args: list[str]) -> ChildRun:
    """`python -m <args>` in a child process; a failure is a ClickException with the end of its stderr."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", *args], stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        if os.waitstatus_to_exitcode(status):
            raise click.ClickException(f"python -m {' '.join(args)} failed:\n{err.read().strip()[-2000:]}")
        return ChildRun(wall, usage.ru_maxrss * 1024, out.read())
