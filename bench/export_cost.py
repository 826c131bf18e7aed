"""Export cost: wall time and peak RSS of `ptdit-export` runs, each in a fresh process (`ptdit-bench export`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ptdit.contract.manifests import read_artifact_manifest

from .child import run_module

TARGET_SECONDS = 90.0
TARGET_RSS_OVER_FP16_WEIGHTS = 3.0
TARGETS_LINE = f"targets: wall < {TARGET_SECONDS:.0f} s, peak RSS < {TARGET_RSS_OVER_FP16_WEIGHTS:.0f} x fp16 weights"


def run_export(args: list[str]) -> dict[str, Any]:
    """Run ptdit-export in a child process: wall time, the child's own peak RSS and its summary."""
    child = run_module(["export", *args, "--json"])
    summary = json.loads(child.stdout)[0]
    manifest = read_artifact_manifest(Path(summary["onnx"]), verify=False)
    return {
        "seconds": round(child.seconds, 1),
        "stage_seconds": summary["seconds"],
        "peak_rss_bytes": child.peak_rss_bytes,
        "artifact_bytes": summary["bytes"],
        "fp16_weight_bytes": manifest.model.parameters * 2,
    }


def export_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| preset | res | precision | checks | wall s | trace s | peak RSS GB | RSS / fp16 weights |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        m = r["measured"]
        lines.append(f"| {r['preset']} | {r['res']} | {r['precision']} | {r['checks']} | "
                     f"{m['seconds']:.1f} | {m['stage_seconds'].get('trace', 0):.1f} | "
                     f"{m['peak_rss_bytes'] / 1e9:.2f} | {m['peak_rss_bytes'] / m['fp16_weight_bytes']:.2f} |")
    return "\n".join(lines)
