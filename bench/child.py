"""The one way the benchmarks run a stage: `python -m <module> ...` in a child process, measured.

The peak RSS is the child's own: Linux keeps a process's ru_maxrss across fork and exec, so wait4's figure starts
at the parent's RSS when the child was made (a benchmark process that has traced xl would add gigabytes to every
child after it). The child runs the module through a small launcher that writes its VmHWM (the high-water mark of
the memory of the program it became, counted from its exec) to a file at exit; wait4's figure is the fallback
where /proc is not there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import click

_LAUNCHER = """\
import atexit, os, runpy, sys

def _write_peak():
    try:
        with open("/proc/self/status") as status:
            kib = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return
    with open(os.environ["PTDIT_BENCH_PEAK_FILE"], "w") as out:
        out.write(kib)

atexit.register(_write_peak)
module = sys.argv[1]
sys.argv = [module, *sys.argv[2:]]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


@dataclass(frozen=True)
class ChildRun:
    seconds: float  # wall time
    peak_rss_bytes: int  # the child's own peak RSS (its VmHWM; wait4's where there is no /proc)
    stdout: str


def run_module(args: list[str]) -> ChildRun:
    """`python -m <args>` in a child process; a failure is a ClickException with the end of its stderr."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err, \
            tempfile.TemporaryDirectory(prefix="ptdit-bench-child-") as tmp:
        peak_file = os.path.join(tmp, "peak")
        start = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-c", _LAUNCHER, *args], stdout=out, stderr=err,
                                   env={**os.environ, "PTDIT_BENCH_PEAK_FILE": peak_file})
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        if os.waitstatus_to_exitcode(status):
            raise click.ClickException(f"python -m {' '.join(args)} failed:\n{err.read().strip()[-2000:]}")
        peak_kib = int(open(peak_file).read()) if os.path.exists(peak_file) else usage.ru_maxrss
        return ChildRun(wall, peak_kib * 1024, out.read())


def export_json(args: list[str]) -> tuple[ChildRun, list[dict[str, Any]]]:
    """ptdit-export `args` in a child process, and what it says it wrote (its --json: each graph's "onnx", or each
    pipeline's "folder"): artifact names come from the export itself, never rebuilt here."""
    child = run_module(["export", *args, "--json"])
    return child, json.loads(child.stdout)
