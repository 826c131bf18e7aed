"""A Triton model repository for a pipeline folder (ptdit-serve repository), in one of two layouts.

`pipeline` (the default on ONNX Runtime): one model runs the whole pipeline in its process.

    REPO/ptdit/config.pbtxt          the served model: protocol.INPUTS in, protocol.OUTPUTS out, its instances
                                     and its queue policy; parameters: backend, device, layout, pipeline, sizes
                                     (and frames, a video folder's)
    REPO/ptdit/1/model.py            runtime/serve/triton_model.py: the project's runtime inside Triton
    REPO/ptdit/1/pipeline/           the pipeline folder (hard links where the file system allows, else copies;
                                     ONNX weights files are copied: ONNX Runtime refuses them hard-linked)

`components` (the default on TensorRT): every component is a Triton model of its own, which Triton schedules
and places (instance groups: copies on every GPU), and `ptdit` drives them (business-logic scripting):

    REPO/text_encoder/, REPO/transformer/, REPO/vae_<h>x<w>/
                                     tensorrt_plan models (ptdit/contract/triton_config.py), or on ONNX Runtime
                                     Python-backend models (runtime/serve/component_model.py)
    REPO/ptdit/1/pipeline/           the folder's manifests, tokenizer and negative prompt, not its graphs

Self-contained: copy REPO into NVIDIA's tritonserver container (with this package installed there) and serve it.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ptdit.contract.errors import InputError, option
from ptdit.contract.manifests import read_artifact_manifest
from ptdit.contract.numbers import INSTANCES, Range
from ptdit.contract.onnx_manifest import TensorSpec
from ptdit.contract.outputs import Outputs
from ptdit.contract.plan_manifest import PlanManifest
from ptdit.contract.triton_config import tensor_config, write_model

from ..pipeline.folder import PipelineFolder, component_path, load_pipeline
from . import protocol

BACKENDS = ("onnxruntime", "tensorrt")
LAYOUTS = ("pipeline", "components")
QUEUE = Range(1, 100_000, integer=True)
QUEUE_TIMEOUT_S = Range(0, 86_400)


@dataclass(frozen=True)
class ServeOptions:
    """backend: onnxruntime (on the CPU, or device cuda) or tensorrt (the plans ptdit-build made in the folder);
    instances: copies of the pipeline per device (CPU: that many processes; GPU: that many on every GPU);
    max_queue_size: requests waiting beyond the running ones before Triton rejects more (UNAVAILABLE);
    queue_timeout_s: a request waiting longer is rejected (0: no limit); layout: pipeline or components
    (default: components for tensorrt, pipeline otherwise)."""

    backend: str = "onnxruntime"
    device: str = "cpu"
    instances: int = 1
    max_queue_size: int = 16
    queue_timeout_s: float = 0.0
    layout: str | None = None

    @property
    def chosen_layout(self) -> str:
        return self.layout or ("components" if self.backend == "tensorrt" else "pipeline")

    def check(self) -> None:
        if self.backend not in BACKENDS:
            raise InputError(f"{option('backend')} must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.device not in ("cpu", "cuda"):
            raise InputError(f"{option('device')} must be cpu or cuda, got {self.device!r}")
        if self.backend == "tensorrt" and self.device == "cpu":
            raise InputError(f"{option('backend', 'tensorrt')} runs on the GPU: pass {option('device', 'cuda')}, "
                             f"or {option('backend', 'onnxruntime')} for the CPU")
        if self.layout is not None and self.layout not in LAYOUTS:
            raise InputError(f"{option('layout')} must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        INSTANCES.check(option("instances"), self.instances)
        QUEUE.check(option("max_queue_size"), self.max_queue_size)
        QUEUE_TIMEOUT_S.check(option("queue_timeout_s"), self.queue_timeout_s)


def _tensor(spec: protocol.Tensor, dims: list[int]) -> str:
    optional = "\n    optional: true" if spec.optional else ""
    shape = ", ".join(map(str, dims))
    return f'  {{\n    name: "{spec.name}"\n    data_type: {spec.triton_type}\n    dims: [ {shape} ]{optional}\n  }}'


def _parameters(values: dict[str, str]) -> str:
    return "".join(f'parameters {{\n  key: "{k}"\n  value: {{ string_value: {json.dumps(v)} }}\n}}\n'
                   for k, v in values.items())


def _instances(options: ServeOptions) -> str:
    kind = "KIND_GPU" if options.device == "cuda" else "KIND_CPU"
    return f"instance_group [\n  {{\n    kind: {kind}\n    count: {options.instances}\n  }}\n]\n"


def component_models(folder: PipelineFolder) -> dict[str, str]:
    """The components' Triton model names, by their file name in pipeline.json."""
    m = folder.manifest
    names = {m.text_encoder.onnx: "text_encoder"}
    names.update({entry.transformer: "transformer" if i == 0 else f"transformer_{entry.size}"
                  for i, entry in enumerate(m.size_entries())})
    names.update({onnx: f"vae_{shape}" for shape, onnx in m.vae_decoder.tiles.items()})
    return names


def config_pbtxt(folder: PipelineFolder, options: ServeOptions, components: dict[str, list[str]] | None = None) -> str:
    """The served model's config: static shapes (max_batch_size 0), one request per pipeline run; the queue
    policy needs Triton's dynamic batcher, which with max_batch_size 0 only queues (it never batches)."""
    frames = folder.manifest.frames
    # height x width: the folder's sizes, or any with binning; a clip's frames first
    outputs = [_tensor(protocol.VIDEO, [-1, -1, -1, 3]) if frames else _tensor(protocol.IMAGE, [-1, -1, 3])]
    outputs += [_tensor(spec, [1]) for spec in protocol.OUTPUTS[1:]]
    parameters = {"backend": options.backend, "device": options.device, "layout": options.chosen_layout,
                  "pipeline": folder.path.name, protocol.SIZES: protocol.sizes_text(
                      [entry.size for entry in folder.manifest.size_entries()])}
    if frames:
        parameters[protocol.FRAMES] = str(frames)
    if components is not None:  # file name in pipeline.json -> [Triton model, artifact whose manifest is kept]
        parameters["components"] = json.dumps(components, sort_keys=True)
    timeout_us = int(options.queue_timeout_s * 1e6)
    return (
        f'name: "{protocol.MODEL}"\n'
        'backend: "python"\n'
        "max_batch_size: 0\n"
        "input [\n" + ",\n".join(_tensor(spec, [1]) for spec in protocol.INPUTS) + "\n]\n"
        "output [\n" + ",\n".join(outputs) + "\n]\n"
        + _instances(options) +
        "dynamic_batching {\n  default_queue_policy {\n"
        f"    max_queue_size: {options.max_queue_size}\n    timeout_action: REJECT\n"
        f"    default_timeout_microseconds: {timeout_us}\n  }}\n}}\n"
        + _parameters(parameters)
    )


def component_config(name: str, artifact: str, inputs: list[TensorSpec], outputs: list[TensorSpec],
                     options: ServeOptions) -> str:
    """A component on ONNX Runtime as a Python-backend model (the components layout without TensorRT)."""
    return (f'name: "{name}"\nbackend: "python"\nmax_batch_size: 0\n'
            "input [\n" + ",\n".join(map(tensor_config, inputs)) + "\n]\n"
            "output [\n" + ",\n".join(map(tensor_config, outputs)) + "\n]\n"
            + _instances(options) + _parameters({"artifact": artifact, "device": options.device}))


# ONNX Runtime refuses an ONNX's external data file that has a second hard link, or that a symlink leads out of the
# model's folder (its guard against a planted file): those are copied.
EXTERNAL_DATA = ".onnx.data"


def _link_or_copy(source: str, target: str) -> None:
    if source.endswith(EXTERNAL_DATA):
        shutil.copy2(source, target)
        return
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _symlink(source: str, target: str) -> None:
    if source.endswith(EXTERNAL_DATA):
        shutil.copy2(source, target)
    else:
        os.symlink(os.path.abspath(source), target)


def write_repository(folder_path: Path, out: Path, options: ServeOptions, force: bool = False,
                     symlinks: bool = False) -> Path:
    """REPO for the pipeline folder at folder_path (checked against its manifest first); nothing is left at out
    if it fails. The folder's files the served model does not run are left out (plans for onnxruntime; in the
    components layout, the graphs, which live in their own models). symlinks: link the folder's files instead
    of hard-linking or copying them (a repository for this machine only: ptdit-serve run FOLDER's own)."""
    options.check()
    place = _symlink if symlinks else _link_or_copy
    folder = load_pipeline(folder_path, verify=True)
    if folder.manifest.is_video and options.chosen_layout == "components":
        raise InputError(f"{folder_path} is a video pipeline: ptdit-serve serves video pipelines in one model; pass "
                         f"--layout pipeline")
    if folder.manifest.step_graph is not None:
        raise InputError(f"{folder_path} samples with a step graph (exported with --step): ptdit-serve serves the "
                         f"noise-prediction pipeline; export the folder without --step to serve it")
    models = component_models(folder)
    artifacts = {name: component_path(folder, name, options.backend) for name in models}  # tensorrt: needs the plans
    if options.backend == "tensorrt" and options.chosen_layout == "components":
        for path in artifacts.values():
            _check_plan_for_triton(path)
    components = options.chosen_layout == "components"
    left_out: set[str] = set()
    if components:
        for name, path in artifacts.items():  # the graphs: the ONNX (and the plan) live in the component's model
            left_out |= set(read_artifact_manifest(folder.file(name), verify=False).files)
            left_out |= set(read_artifact_manifest(path, verify=False).files)

    def ignore(directory: str, names: list[str]) -> list[str]:
        if Path(directory) != folder.path:
            return []
        plans = {n.removesuffix(".plan") for n in names if n.endswith(".plan")}
        unused_plan = options.backend != "tensorrt" or components
        return [n for n in names if n in left_out or (unused_plan and (
            n.endswith(".plan") or (n.endswith(".json") and n.removesuffix(".json") in plans)))]

    with Outputs(force) as outputs:
        staged = outputs.claim(out, folder=True)
        model = staged / protocol.MODEL
        pipeline_dir = model / "1" / "pipeline"
        shutil.copytree(folder.path, pipeline_dir, copy_function=place, ignore=ignore)
        shutil.copyfile(Path(__file__).with_name("triton_model.py"), model / "1" / "model.py")
        listed = None
        if components:
            listed = {}
            for name, path in artifacts.items():
                listed[name] = [models[name], path.name]
                kept = pipeline_dir / path.with_suffix(".json").name  # the component's manifest, for its I/O
                if not kept.exists():
                    place(str(path.with_suffix(".json")), str(kept))
                _write_component(staged / models[name], models[name], path, options, place)
        (model / "config.pbtxt").write_text(config_pbtxt(folder, options, listed))
        outputs.commit()
    return out


def _check_plan_for_triton(plan: Path) -> None:
    """Triton's tensorrt_plan backend runs a full-TensorRT plan with its weights in it: not a TensorRT-RTX plan
    (the pipeline layout runs those, in the project's runtime), not a weightless one."""
    manifest = read_artifact_manifest(plan, verify=False)
    assert isinstance(manifest, PlanManifest)  # a .plan's
    if manifest.builder.target == "rtx":
        raise InputError(f"{plan.name} is a TensorRT-RTX plan, which Triton's tensorrt_plan backend does not run: "
                         f"build the folder's plans with ptdit-build --target tensorrt, or pass --layout pipeline")
    if manifest.build.options.strip_plan:
        raise InputError(f"{plan.name} was built with --strip-plan: Triton would get a plan without its weights; "
                         f"rebuild it without --strip-plan")


def _write_component(model_dir: Path, name: str, artifact: Path, options: ServeOptions,
                     place: Callable[[str, str], None]) -> None:
    manifest = read_artifact_manifest(artifact, verify=False)
    if artifact.suffix == ".plan":
        write_model(model_dir, name, artifact, manifest.inputs, manifest.outputs, options.instances, place)
        return
    (model_dir / "1").mkdir(parents=True)
    for file in [*manifest.files, artifact.with_suffix(".json").name]:
        place(str(artifact.parent / file), str(model_dir / "1" / file))
    shutil.copyfile(Path(__file__).with_name("component_model.py"), model_dir / "1" / "model.py")
    (model_dir / "config.pbtxt").write_text(component_config(name, artifact.name, manifest.inputs, manifest.outputs,
                                                             options))
