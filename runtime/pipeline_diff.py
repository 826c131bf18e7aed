"""ptdit-diff on a pipeline folder: each component against its PyTorch reference on the same inputs (the
transformer with the full artifact diff), then the whole pipeline, prompt to pixels, against the PyTorch
pipeline in fp32: PSNR and max abs of the uint8 images."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .diff import DEFAULT_THRESHOLDS, DiffOptions, compare, run_diff
from .pipeline_run import Pipeline, component_path, load_pipeline

PIPELINE_REPORT_SCHEMA = "ptdit-diff-pipeline/1"
# Smallest PSNR (dB) of the artifact pipeline's image against the PyTorch fp32 pipeline, per transformer
# precision: the tiny stand-ins measured 58 dB (fp16 through ONNX Runtime, README "Prompt in, image out").
MIN_PSNR_DB = {"fp32": 45.0, "fp16": 30.0, "bf16": 25.0}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def component_diff(path: Path, feeds: dict[str, np.ndarray], options: DiffOptions) -> dict[str, Any]:
    from .backend_torch import TorchSession
    from .diff import open_artifact_session

    session = open_artifact_session(path, options, [])
    session.set_inputs(feeds)
    got, backend = session.run(), session.backend
    session.close()
    reference = TorchSession(session.artifact, options.device, "fp32")
    reference.set_inputs(feeds)
    expected = reference.run()
    reference.close()
    name = session.artifact.outputs[0].name
    t = DEFAULT_THRESHOLDS[session.artifact.precision]
    metrics = compare(got[name], expected[name], t.rtol, t.atol)
    return {"artifact": path.name, "backend": backend, "precision": session.artifact.precision, "output": name,
            "max_rel_l2": t.max_rel_l2, **metrics}


def run_pipeline_diff(folder_path: Path, prompt: str, options: DiffOptions,
                      report: Callable[[str], None]) -> dict[str, Any]:
    folder = load_pipeline(folder_path, options.verify)
    m = folder.manifest
    backend = "tensorrt" if options.backend == "tensorrt" else "onnxruntime"
    result: dict[str, Any] = {"schema": PIPELINE_REPORT_SCHEMA, "pipeline": folder_path.name, "prompt": prompt,
                              "seed": options.seed, "components": {}}
    failures: list[str] = []
    report(f"ptdit-diff: {folder_path.name}: the transformer")
    transformer = run_diff(component_path(folder, m["transformer"], backend), replace(options, references=("fp32",)),
                           report)
    result["components"]["transformer"] = transformer
    failures += [f"transformer: {f}" for f in transformer["failures"]]

    pipeline = Pipeline(folder, backend, options.device, options.verify, options.tensorrt)
    try:
        ids, mask = pipeline.tokenizer(prompt)
        rng = np.random.default_rng(options.seed)
        inputs = {"text_encoder": (m["text_encoder"]["onnx"], {"input_ids": ids, "attention_mask": mask})}
        for shape, name in m["vae_decoder"]["tiles"].items():
            h, w = (int(v) for v in shape.split("x"))
            inputs[f"vae {shape}"] = (name, {"latent": rng.standard_normal((1, 4, h, w)).astype(np.float32)})
        for label, (name, feeds) in inputs.items():
            report(f"ptdit-diff: {folder_path.name}: {label}")
            entry = component_diff(component_path(folder, name, backend), feeds, options)
            result["components"][label] = entry
            if entry["rel_l2"] > entry["max_rel_l2"]:
                failures.append(f"{label}: relative L2 {entry['rel_l2']:.3g} > {entry['max_rel_l2']:g}")
        report(f"ptdit-diff: {folder_path.name}: the whole pipeline, prompt to pixels")
        steps = options.steps or 10
        got = pipeline(prompt, None, steps, options.guidance, options.seed)
    finally:
        pipeline.close()
    reference = Pipeline(folder, "torch", options.device, options.verify, torch_precision="fp32")
    try:
        expected = reference(prompt, None, steps, options.guidance, options.seed)
    finally:
        reference.close()
    precision = transformer["precision"]
    value, least = psnr(got.pixels, expected.pixels), MIN_PSNR_DB[precision]
    result["image"] = {"steps": steps, "psnr_db": value, "min_psnr_db": least,
                       "max_abs": int(np.abs(got.pixels.astype(np.int16) - expected.pixels).max()),
                       "mean_abs": float(np.abs(got.pixels.astype(np.float64) - expected.pixels).mean()),
                       "backends": got.backends}
    if value < least:
        failures.append(f"image: PSNR {value:.1f} dB < {least:g} dB")
    result["failures"] = failures
    result["passed"] = not failures
    return result


def pipeline_table(result: dict[str, Any]) -> str:
    lines = [f"{result['pipeline']}: prompt {result['prompt']!r}, seed {result['seed']}", "",
             "| component | artifact | backend | rel L2 | max abs | cosine |", "| --- | --- | --- | --- | --- | --- |"]
    for label, entry in result["components"].items():
        if label == "transformer":
            out = entry["references"]["fp32"]["outputs"]
            m = next(iter(out.values()))
            lines.append(f"| transformer | {entry['artifact']} | {entry['backend']} | {m['rel_l2']:.3e} | "
                         f"{m['max_abs']:.3e} | {m['cosine']:.6f} |")
        else:
            lines.append(f"| {label} | {entry['artifact']} | {entry['backend']} | {entry['rel_l2']:.3e} | "
                         f"{entry['max_abs']:.3e} | {entry['cosine']:.6f} |")
    image = result["image"]
    lines += ["", f"image after {image['steps']} steps against the PyTorch fp32 pipeline: PSNR {image['psnr_db']:.2f} dB "
                  f"(min {image['min_psnr_db']:g}), max abs {image['max_abs']} / 255, mean abs {image['mean_abs']:.3f}",
              "", "PASSED" if result["passed"] else "FAILED: " + "; ".join(result["failures"])]
    return "\n".join(lines)
