"""Export cost: wall time and peak RSS of `ptdit-export` runs, each in a fresh process (`ptdit-bench export`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

TARGET_SECONDS = 90.0
TARGET_RSS_OVER_FP16_WEIGHTS = 3.0
TARGETS = f"targets: wall < {TARGET_SECONDS:.0f} s, peak RSS < {TARGET_RSS_OVER_FP16_WEIGHTS:.0f} x fp16 weights"


def run_module(args: list[str]) -> tuple[float, int, str]:
    """`python -m <args>` in a child process: wall seconds, the child's own peak RSS in bytes (wait4), and its
    stdout; a failure is a ClickException with the end of its stderr."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", *args], stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        if os.waitstatus_to_exitcode(status):
            raise click.ClickException(f"{' '.join(args)} failed:\n{err.read().strip()[-2000:]}")
        return wall, usage.ru_maxrss * 1024, out.read()


def run_export(args: list[str]) -> dict[str, Any]:
    """Run ptdit-export in a child process: wall time, the child's own peak RSS and its summary."""
    wall, peak_rss, stdout = run_module(["export", *args, "--json"])
    summary = json.loads(stdout)[0]
    manifest = json.loads(Path(summary["manifest"]).read_text())
    return {
        "seconds": round(wall, 1),
        "stage_seconds": summary["seconds"],
        "peak_rss_bytes": peak_rss,
        "artifact_bytes": summary["bytes"],
        "fp16_weight_bytes": manifest["model"]["parameters"] * 2,
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| preset | res | precision | checks | wall s | trace s | peak RSS GB | RSS / fp16 weights |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        m = r["measured"]
        lines.append(f"| {r['preset']} | {r['res']} | {r['precision']} | {r['checks']} | "
                     f"{m['seconds']:.1f} | {m['stage_seconds'].get('trace', 0):.1f} | "
                     f"{m['peak_rss_bytes'] / 1e9:.2f} | {m['peak_rss_bytes'] / m['fp16_weight_bytes']:.2f} |")
    return "\n".join(lines)
