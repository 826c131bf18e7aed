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


def run_export(args: list[str]) -> dict[str, Any]:
    """Run ptdit-export in a child process: wall time, the child's own peak RSS (wait4) and its summary."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", "export", *args, "--json"], stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if process.returncode:
            raise click.ClickException(f"ptdit-export {' '.join(args)} failed:\n{err.read().strip()[-2000:]}")
        summary = json.loads(out.read())[0]
    manifest = json.loads(Path(summary["manifest"]).read_text())
    return {
        "seconds": round(wall, 1),
        "stage_seconds": summary["seconds"],
        "peak_rss_bytes": usage.ru_maxrss * 1024,
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
