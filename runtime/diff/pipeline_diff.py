"""ptdit-diff on a pipeline folder: each component against its PyTorch reference on the same inputs (the
transformer with the full artifact diff), then the whole pipeline, prompt to pixels, against the PyTorch
pipeline in fp32: PSNR and max abs of the uint8 images."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..pipeline.folder import component_path, load_pipeline
from ..pipeline.text_to_image import Pipeline
from .artifact_diff import DiffOptions, open_artifact_session, run_diff
from .metrics import DEFAULT_THRESHOLDS, diff_metrics, psnr, within

PIPELINE_REPORT_SCHEMA = "ptdit-diff-pipeline/1"
# Smallest PSNR (dB) of the artifact pipeline's image against the PyTorch fp32 pipeline, per transformer
# precision: the tiny stand-ins measured 58 dB (fp16 through ONNX Runtime, README "Prompt in, image out").
MIN_PSNR_DB = {"fp32": 45.0, "fp16": 30.0, "bf16": 25.0}


def component_diff(path: Path, feeds: dict[str, np.ndarray], options: DiffOptions) -> dict[str, Any]:
    from ..backends.torch_session import TorchSession

    with open_artifact_session(path, options, []) as session:
        session.set_inputs(feeds)
        got, backend, artifact = session.run(), session.backend, session.artifact
    with TorchSession(artifact, options.device, "fp32") as reference:
        reference.set_inputs(feeds)
        expected = reference.run()
    name = artifact.outputs[0].name
    t = DEFAULT_THRESHOLDS[artifact.precision]
    metrics = diff_metrics(got[name], expected[name], t.rtol, t.atol)
    return {"artifact": path.name, "backend": backend, "precision": artifact.precision, "output": name,
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
    transformer = run_diff(component_path(folder, m.transformer, backend), replace(options, references=("fp32",)),
                           report)
    result["components"]["transformer"] = transformer
    failures += [f"transformer: {f}" for f in transformer["failures"]]

    with Pipeline(folder, backend, options.device, options.verify, options.tensorrt) as pipeline:
        ids, mask = pipeline.tokenizer(prompt)
        rng = np.random.default_rng(options.seed)
        inputs = {"text_encoder": (m.text_encoder.onnx, {"input_ids": ids, "attention_mask": mask})}
        for shape, name in m.vae_decoder.tiles.items():
            h, w = (int(v) for v in shape.split("x"))
            inputs[f"vae {shape}"] = (name, {"latent": rng.standard_normal((1, 4, h, w)).astype(np.float32)})
        for label, (name, feeds) in inputs.items():
            report(f"ptdit-diff: {folder_path.name}: {label}")
            entry = component_diff(component_path(folder, name, backend), feeds, options)
            result["components"][label] = entry
            if not within(entry["rel_l2"], entry["max_rel_l2"]):
                failures.append(f"{label}: relative L2 {entry['rel_l2']:.3g} > {entry['max_rel_l2']:g}")
        report(f"ptdit-diff: {folder_path.name}: the whole pipeline, prompt to pixels")
        steps = options.steps or 10
        got = pipeline(prompt, None, steps, options.guidance, options.seed)
    with Pipeline(folder, "torch", options.device, options.verify, torch_precision="fp32") as reference:
        expected = reference(prompt, None, steps, options.guidance, options.seed)
    precision = transformer["precision"]
    value, least = psnr(got.pixels, expected.pixels), MIN_PSNR_DB[precision]
    result["image"] = {"steps": steps, "psnr_db": value, "min_psnr_db": least,
                       "max_abs": int(np.abs(got.pixels.astype(np.int16) - expected.pixels).max()),
                       "mean_abs": float(np.abs(got.pixels.astype(np.float64) - expected.pixels).mean()),
                       "backends": got.backends}
    if not value >= least:  # NaN fails
        failures.append(f"image: PSNR {value:.1f} dB < {least:g} dB")
    result["failures"] = failures
    result["passed"] = not failures
    return result
