"""What several sizes cost (`ptdit-bench sizes`): ptdit-export of the first size alone against one export of every
size (their weights stored once), each in a fresh process (wall time, peak RSS, bytes on disk); and with --build,
ptdit-build --target rtx of each size's graph (plan bytes, build time, peak RSS, and the device memory of its
engine as the builder logs it). (A weightless plan, --strip-plan,
is compiled with CUDA by TensorRT-RTX: it needs a GPU, so it is not measured here.) The stages run as commands
(bench.child)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from ptdit.contract.progress import Reporter

from .child import export_json, run_module


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def sizes_rows(preset: str, sizes: list[str], precision: str, build: bool, report: Reporter) -> dict[str, Any]:
    result: dict[str, Any] = {"preset": preset, "precision": precision, "sizes": sizes, "exports": [], "builds": []}
    with tempfile.TemporaryDirectory(prefix="ptdit-bench-sizes-") as tmp:
        for label, asked in (("one size", sizes[:1]), (f"{len(sizes)} sizes, one command", sizes)):
            out = Path(tmp) / label.replace(" ", "-").replace(",", "")
            args = ["--preset", preset, "--precision", precision, "--checks", "none"]
            args += [arg for size in asked for arg in ("--size", size)]
            report(f"  ptdit-export {' '.join(args)}")
            args += ["--out", str(out)]
            child, graphs = export_json(args)
            result["exports"].append({"what": label, "graphs": len(graphs), "seconds": round(child.seconds, 1),
                                      "peak_rss_bytes": child.peak_rss_bytes, "disk_bytes": folder_bytes(out)})
        if build:
            for graph in graphs:  # the export of every size
                onnx_path = Path(graph["onnx"])
                report(f"  ptdit-build {onnx_path.name} --target rtx")
                child = run_module(["engines", str(onnx_path), "--target", "rtx", "--json", "--force", "--out",
                                    str(Path(tmp) / "plans")])
                summary = json.loads(child.stdout)
                plan = Path(summary["plan"])
                result["builds"].append({"graph": onnx_path.name, "plan_bytes": plan.stat().st_size,
                                         "seconds": round(child.seconds, 1), "peak_rss_bytes": child.peak_rss_bytes,
                                         "device_memory": summary["build"].get("device_memory") or {}})
                plan.unlink()
    one, every = result["exports"]
    result["ratios"] = {key: round(every[key] / one[key], 2) for key in ("seconds", "peak_rss_bytes", "disk_bytes")}
    return result


def sizes_table(result: dict[str, Any]) -> str:
    lines = [f"{result['preset']} {result['precision']}, sizes {', '.join(result['sizes'])} (checks none)", "",
             "| export | graphs | wall s | peak RSS GB | disk GB |", "| --- | --- | --- | --- | --- |"]
    for r in result["exports"]:
        lines.append(f"| {r['what']} | {r['graphs']} | {r['seconds']:.1f} | {r['peak_rss_bytes'] / 1e9:.2f} | "
                     f"{r['disk_bytes'] / 1e9:.2f} |")
    ratios = result["ratios"]
    lines.append(f"| ratio | | {ratios['seconds']:.2f} | {ratios['peak_rss_bytes']:.2f} | {ratios['disk_bytes']:.2f} |")
    if result["builds"]:
        lines += ["", "| graph (TensorRT-RTX plan) | plan GB | build wall s | peak RSS GB | device: weights GB | "
                  "activations GB |", "| --- | --- | --- | --- | --- | --- |"]
        for b in result["builds"]:
            memory = [f"{b['device_memory'][k] / 1e9:.3f}" if k in b["device_memory"] else "n/a"
                      for k in ("weights", "activation")]
            lines.append(f"| {b['graph']} | {b['plan_bytes'] / 1e9:.3f} | {b['seconds']:.1f} | "
                         f"{b['peak_rss_bytes'] / 1e9:.2f} | {' | '.join(memory)} |")
    return "\n".join(lines)
