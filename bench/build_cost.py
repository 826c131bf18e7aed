"""Build cost: `ptdit-bench build` exports a model once per resolution, then times `ptdit-build` on it in a fresh
process per builder configuration (wall time, the child's peak RSS, parse and build seconds, plan size).

The engines stage is run as a command, not imported (stages talk through files)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from ptdit.contract.manifests import read_artifact_manifest
from ptdit.contract.plan_manifest import PlanManifest
from ptdit.contract.progress import Reporter

from .child import export_json, run_module

TARGET_BUILD_SECONDS = 60.0
TARGET_RSS_OVER_PLAN = 2.0
TARGETS_LINE = (f"targets (xl at 256, TensorRT-RTX on 2 CPU cores): build < {TARGET_BUILD_SECONDS:.0f} s, peak "
                f"RSS < {TARGET_RSS_OVER_PLAN:.0f} x plan size")
DEFAULT_CONFIGS = ("", "--opt-level 0", "--opt-level 5", "--tiling-level fast")


def build_rows(preset: str, resolutions: tuple[int, ...], precision: str, target: str, configs: tuple[str, ...],
               report: Reporter) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="ptdit-bench-build-") as tmp:
        for res in resolutions:
            report(f"  ptdit-export --preset {preset} --res {res} --precision {precision} --checks none")
            _, graphs = export_json(["--preset", preset, "--res", str(res), "--precision", precision, "--checks",
                                     "none", "--out", tmp])
            onnx_path = Path(graphs[0]["onnx"])
            for config in configs:
                options = config.split()
                report(f"  ptdit-build {onnx_path.name} --target {target} {config}".rstrip())
                child = run_module(["engines", str(onnx_path), "--target", target, "--force", "--json",
                                    "--out", str(Path(tmp) / "plans"), *options])
                plan = Path(json.loads(child.stdout)["plan"])
                manifest = read_artifact_manifest(plan, verify=False)
                assert isinstance(manifest, PlanManifest)
                build = manifest.build
                rows.append({"preset": preset, "res": res, "precision": precision, "options": config or "(defaults)",
                             "builder": f"{manifest.builder.module} {manifest.builder.version}",
                             "layers": build.layers, "parse_seconds": build.parse_seconds,
                             "build_seconds": build.seconds, "wall_seconds": round(child.seconds, 1),
                             "plan_bytes": manifest.plan.bytes, "peak_rss_bytes": child.peak_rss_bytes})
                plan.unlink()
    return rows


def build_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| preset | res | precision | builder options | layers | parse s | build s | wall s | plan MB | "
             "peak RSS GB | RSS / plan |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['preset']} | {r['res']} | {r['precision']} | {r['options']} | {r['layers']:,} | "
                     f"{r['parse_seconds']:.1f} | {r['build_seconds']:.1f} | {r['wall_seconds']:.1f} | "
                     f"{r['plan_bytes'] / 1e6:,.0f} | {r['peak_rss_bytes'] / 1e9:.2f} | "
                     f"{r['peak_rss_bytes'] / r['plan_bytes']:.2f} |")
    return "\n".join(lines)
