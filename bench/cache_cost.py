"""What step caching buys and costs (`ptdit-bench cache`): per model, a pipeline folder exported, calibrated
(ptdit-cache calibrate) and measured (ptdit-cache measure: transformer calls and sampling time against the uncached
run of the same process, the final latent's relative L2, the image's PSNR and SSIM against it); the prediction's
step-to-step change profile from the calibration; and ptdit-run --cache on the host loop and on the device step loop
(calls, sampling seconds, host bytes per step). Every stage runs as its command in a child process (bench.child).

The models: `tiny-trained` is the tiny preset trained for minutes on procedural latents (bench/train_tiny.py, its
checkpoint in bench/data); `tiny` and `xl` are seeded weights, not trained models: what caching does to them
describes them only."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from ptdit.contract.cache import ChangeCurve
from ptdit.contract.progress import Reporter
from ptdit.contract.schedule import timestep_shift, timesteps

from .child import run_module
from .train_tiny import CHECKPOINT, PROMPTS

MODELS = {"tiny-trained": ("tiny", CHECKPOINT), "tiny": ("tiny", None), "xl": ("xl", None)}
DEFAULT_METHODS = ("every:2", "every+taylor:2", "every:3", "every+taylor:3", "default", "calibrated+taylor")


def change_profile(calibration: dict[str, Any], resolution: int) -> dict[str, Any]:
    """The relative change of the guided prediction from each step to the next, as the calibration measured it
    (its curve back on its own schedule)."""
    curve = ChangeCurve(tuple(calibration["timesteps"]), tuple(calibration["rates"]))
    changes = curve.changes(timesteps(calibration["steps"], timestep_shift(resolution, resolution, None)))[1:]
    ordered = sorted(changes)
    return {"median": ordered[len(ordered) // 2], "min": ordered[0], "max": ordered[-1],
            "per_step": [round(c, 4) for c in changes]}


def cache_rows(models: list[str], resolution: int, steps: int, prompt_count: int, seeds: int, methods: list[str],
               precision: str, report: Reporter) -> dict[str, Any]:
    result: dict[str, Any] = {"resolution": resolution, "steps": steps, "seeds": seeds, "precision": precision,
                              "prompts": list(PROMPTS[:prompt_count]), "models": []}
    with tempfile.TemporaryDirectory(prefix="ptdit-bench-cache-") as tmp:
        prompts = Path(tmp) / "prompts.txt"
        prompts.write_text("\n".join(result["prompts"]) + "\n")
        common = ["--steps", str(steps), "--seeds", str(seeds), "--prompts", str(prompts), "-q", "--json"]
        for name in models:
            preset, checkpoint = MODELS[name]
            out = Path(tmp) / name
            args = ["--preset", preset, "--res", str(resolution), "--precision", precision, "--pipeline", "--step",
                    "--checks", "none",
                    *(["--checkpoint", str(checkpoint)] if checkpoint else []), "--out", str(out), "--json"]
            report(f"  {name}: ptdit-export {' '.join(args[:-3])}")
            run_module(["export", *args])
            folder = next(p for p in out.iterdir() if p.is_dir())
            report(f"  {name}: ptdit-cache calibrate")
            calibration = json.loads(run_module(["runtime.cli.cache", "calibrate", str(folder), *common]).stdout)
            report(f"  {name}: ptdit-cache measure {' '.join(methods)}")
            measure_args = [arg for m in methods for arg in ("--method", m)]
            rows = json.loads(run_module(["runtime.cli.cache", "measure", str(folder), *measure_args,
                                          *common]).stdout)
            result["models"].append({"model": name, "threshold": calibration["threshold"],
                                     "target_psnr": calibration["target_psnr"],
                                     "change": change_profile(calibration, resolution), "rows": rows,
                                     "loops": loop_rows(folder, steps, report)})
    return result


def loop_rows(folder: Path, steps: int, report: Reporter) -> list[dict[str, Any]]:
    """ptdit-run --cache every:2 and off on the noise-prediction graph (host loop) and the step graph (device)."""
    rows = []
    graphs = sorted(p for p in folder.glob("ptdit-*.onnx"))
    for graph in graphs:
        for cache in ("off", "every:2"):
            report(f"  ptdit-run {graph.name} --cache {cache}")
            child = run_module(["runtime", str(graph), "--random-text", "--steps", str(steps), "--cache",
                                cache, "--out", str(folder.parent / "latent.npy"), "--force", "--json", "-q"])
            summary = json.loads(child.stdout)
            rows.append({"graph": graph.name, "loop": summary["loop"], "cache": cache,
                         "transformer_calls": summary["transformer_calls"],
                         "sample_seconds": summary["sample_seconds"],
                         "host_bytes_per_step_after_first": sum(
                             summary["transfers"]["per_step_after_first_max"][k]
                             for k in ("to_device_bytes", "from_device_bytes"))})
    for row in rows:
        base = next(r for r in rows if r["graph"] == row["graph"] and r["cache"] == "off")
        row["calls_ratio"] = round(row["transformer_calls"] / base["transformer_calls"], 3)
        row["time_ratio"] = round(row["sample_seconds"] / base["sample_seconds"], 3)
    return rows


def cache_table(result: dict[str, Any]) -> str:
    lines = [f"{result['precision']}, {result['resolution']} px, {result['steps']} steps, guidance 4, "
             f"{len(result['prompts'])} prompts x "
             f"{result['seeds']} seeds; quality against the uncached run of the same prompt and seed", ""]
    for model in result["models"]:
        change = model["change"]
        lines += [f"{model['model']}: step-to-step change of the guided prediction median {change['median']:.1%} "
                  f"(min {change['min']:.1%}, max {change['max']:.1%}); default = calibrated:{model['threshold']:g} "
                  f"(mean PSNR >= {model['target_psnr']:g} dB on these prompts)", "",
                  "| cache | calls | x calls | sample s/image | x sample time | rel L2 (latent) | PSNR dB | SSIM |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in model["rows"]:
            psnr = r["psnr_db"] if isinstance(r["psnr_db"], str) else f"{r['psnr_db']:.1f}"  # "inf": identical
            lines.append(f"| {r['cache']} | {r['transformer_calls']:.1f} | {r['calls_ratio']:.2f} | "
                         f"{r['sample_seconds_per_image']:.3f} | {r['sample_time_ratio']:.2f} | "
                         f"{r['latent_rel_l2']:.4f} | {psnr} | {r['ssim']:.3f} |")
        lines += ["", "| ptdit-run | loop | cache | calls | x calls | sample s | x time | host bytes/step after the "
                  "first |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in model["loops"]:
            lines.append(f"| {r['graph']} | {r['loop']} | {r['cache']} | {r['transformer_calls']} | "
                         f"{r['calls_ratio']:.2f} | {r['sample_seconds']:.2f} | {r['time_ratio']:.2f} | "
                         f"{r['host_bytes_per_step_after_first']} |")
        lines.append("")
    return "\n".join(lines)
