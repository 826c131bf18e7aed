"""Prompt to video, measured (ptdit-bench video): the tiny video pipeline exported for the run (or a given folder),
one ptdit-run to an .mp4 with its per-stage times, then each VAE decoder chunk shape of the folder decoded once in a
fresh process (python -m runtime.bench_decode), with that process's peak RSS and its peak once the session was
loaded: what one chunk of the decode costs in memory beyond the loaded decoder."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from ptdit.contract.errors import InputError
from ptdit.contract.manifests import read_manifest
from ptdit.contract.pipeline_manifest import PipelineManifest
from ptdit.contract.progress import Reporter

from .child import export_json, run_module

PROMPT = "a red fox running in the snow"


def video_rows(folder: Path | None, preset_name: str, res: int, frames: int, steps: int,
               report: Reporter) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ptdit-bench-video-") as tmp:
        result: dict[str, Any] = {}
        if folder is None:
            report(f"  exporting the {preset_name} video pipeline at {res}, {frames} latent frames")
            child, folders = export_json(["--preset", preset_name, "--res", str(res), "--frames", str(frames),
                                          "--pipeline", "--out", tmp])
            folder = Path(folders[0]["folder"])
            result["export"] = {"seconds": round(child.seconds, 1), "peak_rss_bytes": child.peak_rss_bytes}
        manifest = read_manifest(PipelineManifest, folder / "pipeline.json", "this folder",
                                 f"{folder} has no pipeline.json: pass a folder of ptdit-export --pipeline --frames F")
        if not manifest.is_video:
            raise InputError(f"{folder} is an image pipeline: ptdit-bench video takes a video pipeline folder "
                             f"(ptdit-export --pipeline --frames F)")
        report(f"  ptdit-run {folder.name} --steps {steps} --out clip.mp4")
        child = run_module(["runtime", str(folder), "--prompt", PROMPT, "--steps", str(steps), "--out",
                            str(Path(tmp) / "clip.mp4"), "--json"])
        summary = json.loads(child.stdout)
        result["run"] = {"seconds": round(child.seconds, 1), "peak_rss_bytes": child.peak_rss_bytes,
                         "stages": summary["seconds"], "video": summary["video"], "steps": steps}
        result["chunks"] = []
        for shape in manifest.vae_decoder.tiles:
            report(f"  decoding one {shape} chunk in a fresh process")
            child = run_module(["runtime.bench_decode", str(folder), "--shape", shape])
            result["chunks"].append({**json.loads(child.stdout), "peak_rss_bytes": child.peak_rss_bytes})
        chunks = [list(c) for c in manifest.vae_decoder.chunks or ()]
        return {"pipeline": folder.name, "latent_frames": manifest.frames, "chunk_ranges": chunks, **result}


def video_table(data: dict[str, Any]) -> str:
    run = data["run"]
    f, h, w = run["video"][:3]
    lines = [f"{data['pipeline']}: {data['latent_frames']} latent frames, {f} frames of {w} x {h}, decoded in the "
             f"chunks {data['chunk_ranges']}", "",
             "| what | wall s | peak RSS GB | detail |", "| --- | --- | --- | --- |"]
    if "export" in data:
        lines.append(f"| ptdit-export --pipeline --frames {data['latent_frames']} | {data['export']['seconds']:.1f} | "
                     f"{data['export']['peak_rss_bytes'] / 1e9:.2f} | |")
    stages = ", ".join(f"{k} {v:.2f} s" for k, v in run["stages"].items())
    lines.append(f"| ptdit-run, {run['steps']} steps, .mp4 | {run['seconds']:.1f} | "
                 f"{run['peak_rss_bytes'] / 1e9:.2f} | {stages} |")
    for c in data["chunks"]:
        own = (c["peak_rss_bytes"] - c["loaded_peak_rss_bytes"]) / 1e9
        lines.append(f"| decode one {c['shape']} chunk ({c['image'][2]} frames) | {c['seconds']:.1f} | "
                     f"{c['peak_rss_bytes'] / 1e9:.2f} | {own:.2f} GB above the loaded session "
                     f"({c['loaded_peak_rss_bytes'] / 1e9:.2f} GB) |")
    return "\n".join(lines)
