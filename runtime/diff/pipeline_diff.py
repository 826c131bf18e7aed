"""ptdit-diff on a pipeline folder: each component against its PyTorch reference on the same inputs (the
transformer with the full artifact diff), then the whole pipeline, prompt to pixels, against the PyTorch
pipeline in fp32: PSNR and max abs of the uint8 images; for a video folder, the PSNR of every frame, the worst
frame (judged by the image limit) and the whole clip's."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ptdit.contract.errors import InputError
from ptdit.contract.pipeline_manifest import COMPONENT_MAX_REL_L2
from ptdit.contract.progress import Counter, Reporter, no_counter
from ptdit.contract.sizes import Size

from ..pipeline.folder import component_path, load_pipeline
from ..pipeline.ptdit_pipeline import COMMAND_NAMES, PTDiTPipeline
from ..pipeline.text_to_image import PipelineComponents
from .artifact_diff import DiffOptions, open_artifact_session, run_diff
from .metrics import DEFAULT_THRESHOLDS, diff_metrics, psnr, within

PIPELINE_REPORT_SCHEMA = "ptdit-diff-pipeline/2"  # /2: components judged by the export's limits; video
# Smallest PSNR (dB) of the artifact pipeline's image against the PyTorch fp32 pipeline, per transformer
# precision: the tiny stand-ins (seeded weights) measured 59.2 dB (fp16 through ONNX Runtime, 10 steps;
# docs/benchmarks.md, "Pipelines").
MIN_PSNR_DB = {"fp32": 45.0, "fp16": 30.0, "bf16": 25.0, "fp8": 20.0}


def component_diff(path: Path, kind: str, feeds: dict[str, np.ndarray], options: DiffOptions) -> dict[str, Any]:
    """A component (`kind`: a key of COMPONENT_MAX_REL_L2) against its PyTorch fp32 reference, judged by the
    export's limit for it."""
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
            "max_rel_l2": COMPONENT_MAX_REL_L2[kind][artifact.precision], **metrics}


def run_pipeline_diff(folder_path: Path, prompt: str, options: DiffOptions, report: Reporter,
                      counter: Counter = no_counter) -> dict[str, Any]:
    folder = load_pipeline(folder_path, options.verify)
    m = folder.manifest
    backend = "tensorrt" if options.backend == "tensorrt" else "onnxruntime"
    result: dict[str, Any] = {"schema": PIPELINE_REPORT_SCHEMA, "pipeline": folder_path.name, "prompt": prompt,
                              "seed": options.seed, "cache": options.cache or "off", "components": {}}
    failures: list[str] = []
    entries = m.size_entries()
    for i, entry in enumerate(entries):  # each size's transformer (and step graph): the first is "transformer"
        at = "" if i == 0 else f" {entry.size}"
        graphs = [("transformer", entry.transformer), *([("step_graph", entry.step_graph)] if entry.step_graph else [])]
        for label, name in graphs:
            report(f"ptdit-diff: {folder_path.name}: the {label.replace('_', ' ')}{at}")
            # each graph on its own, uncached: step caching is judged on the whole pipeline, below
            diff = run_diff(component_path(folder, name, backend), replace(options, references=("fp32",), cache=None),
                            report, counter)
            result["components"][f"{label}{at}"] = diff
            failures += [f"{label.replace('_', ' ')}{at}: {f}" for f in diff["failures"]]
    precision = result["components"]["transformer"]["precision"]

    with PipelineComponents(folder, backend, options.device, options.verify, options.tensorrt) as components:
        ids, mask = components.tokenizer(prompt)
        rng = np.random.default_rng(options.seed)
        inputs = {"text_encoder": (m.text_encoder.onnx, "t5", {"input_ids": ids, "attention_mask": mask})}
        for shape, name in m.vae_decoder.tiles.items():
            latent = components.sessions[f"vae {shape}"].artifact.spec("latent").shape  # [1, 4, (t,) h, w]
            kind = "vae_video" if len(latent) == 5 else "vae"
            inputs[f"vae {shape}"] = (name, kind, {"latent": rng.standard_normal(latent).astype(np.float32)})
        for label, (name, kind, feeds) in inputs.items():
            report(f"ptdit-diff: {folder_path.name}: {label}")
            judged = component_diff(component_path(folder, name, backend), kind, feeds, options)
            result["components"][label] = judged
            if not within(judged["rel_l2"], judged["max_rel_l2"]):
                failures.append(f"{label}: relative L2 {judged['rel_l2']:.3g} > {judged['max_rel_l2']:g}")
        steps = options.steps or 10
        pipe = PTDiTPipeline(components.transformer(entries[0].size), components)
        got = {}
        for entry in entries:
            report(f"ptdit-diff: {folder_path.name}: the whole pipeline at {entry.size}, prompt to pixels")
            got[entry.size] = _draw(pipe, prompt, steps, options, counter, f"pipeline (artifacts) {entry.size}",
                                    entry.size, options.cache)
        backends = {name: session.backend for name, session in components.sessions.items()}
    with PTDiTPipeline.from_folder(folder_path, "torch", options.device, options.verify,
                                   torch_precision="fp32") as reference:
        for i, entry in enumerate(entries):  # the first size is "image" (or "video"), as in a folder of one
            expected = _draw(reference, prompt, steps, options, counter, f"pipeline (PyTorch fp32) {entry.size}",
                             entry.size)
            key = ("video" if m.is_video else "image") + ("" if i == 0 else f" {entry.size}")
            result[key] = _judged(got[entry.size], expected, m.is_video, MIN_PSNR_DB[precision], steps, backends,
                                  key, failures)
    result["failures"] = failures
    result["passed"] = not failures
    return result


def _judged(got_pixels: np.ndarray, expected_pixels: np.ndarray, video: bool, least: float, steps: int,
            backends: dict[str, str], key: str, failures: list[str]) -> dict[str, Any]:
    """The artifacts' picture against PyTorch's: PSNR and differences (a video's per frame; it passes when its
    worst frame would pass as an image); a failure is added to `failures`."""
    value = psnr(got_pixels, expected_pixels)
    pictures = {"steps": steps, "psnr_db": value, "min_psnr_db": least,
                "max_abs": int(np.abs(got_pixels.astype(np.int16) - expected_pixels).max()),
                "mean_abs": float(np.abs(got_pixels.astype(np.float64) - expected_pixels).mean()), "backends": backends}
    if video:
        per_frame = [psnr(a, b) for a, b in zip(got_pixels, expected_pixels)]
        worst = int(np.argmin(per_frame))
        pictures.update(video_frames=len(per_frame), psnr_db_per_frame=per_frame, worst_frame=worst,
                        worst_frame_psnr_db=per_frame[worst])
        if not per_frame[worst] >= least:
            failures.append(f"{key}: frame {worst} PSNR {per_frame[worst]:.1f} dB < {least:g} dB")
    elif not value >= least:  # NaN fails
        failures.append(f"{key}: PSNR {value:.1f} dB < {least:g} dB")
    return pictures


def _draw(pipe: PTDiTPipeline, prompt: str, steps: int, options: DiffOptions, counter: Counter,
          label: str, size: Size, cache: str | None = None) -> np.ndarray:
    """The pipeline's uint8 image [H, W, 3] (a video's frames [F, H, W, 3]) of `prompt` at `size` (its errors in
    ptdit-diff's terms)."""
    with counter(label, steps, "step") as advance:
        try:
            out = pipe(prompt, num_inference_steps=steps, guidance_scale=options.guidance, seed=options.seed,
                       callback_on_step_end=lambda i, t, latent: advance(f"t={t:7.2f}"), height=size.height,
                       width=size.width, cache=cache)
        except InputError as e:
            raise e.renamed(COMMAND_NAMES) from None
    if out.frames is not None:
        assert isinstance(out.frames, list)
        return np.stack([np.asarray(frame) for frame in out.frames[0]])
    assert isinstance(out.images, list)
    return np.asarray(out.images[0])
