"""Triton Inference Server model configs: the data types, and the model of a plan (<repo>/<name>/config.pbtxt and
<repo>/<name>/1/model.plan), written by ptdit-build --triton-repo and by ptdit-serve repository's components
layout."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

from .errors import InputError
from .onnx_manifest import TensorSpec

TRITON_TYPES = {
    "float32": "TYPE_FP32", "float16": "TYPE_FP16", "bfloat16": "TYPE_BF16", "int64": "TYPE_INT64",
    "int32": "TYPE_INT32", "int8": "TYPE_INT8", "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL", "object": "TYPE_STRING",
}


def wire_type(triton_type: str) -> str:
    """The datatype a client names (tritonclient's InferInput): TYPE_FP32 -> FP32, TYPE_STRING -> BYTES."""
    return "BYTES" if triton_type == "TYPE_STRING" else triton_type.removeprefix("TYPE_")


def tensor_config(t: TensorSpec) -> str:
    try:
        dtype = TRITON_TYPES[t.dtype]
    except KeyError:
        raise InputError(f"tensor {t.name} has dtype {t.dtype}, which Triton has no type for") from None
    dims = ", ".join(str(d) for d in t.shape)
    return f'  {{\n    name: "{t.name}"\n    data_type: {dtype}\n    dims: [ {dims} ]\n  }}'


def config_pbtxt(name: str, inputs: list[TensorSpec], outputs: list[TensorSpec], instances: int = 1) -> str:
    """Static shapes, so max_batch_size 0 and the full shape (batch included) in dims; `instances` copies of
    the plan on every GPU."""
    return (
        f'name: "{name}"\n'
        'platform: "tensorrt_plan"\n'
        "max_batch_size: 0\n"
        "input [\n" + ",\n".join(map(tensor_config, inputs)) + "\n]\n"
        "output [\n" + ",\n".join(map(tensor_config, outputs)) + "\n]\n"
        f"instance_group [\n  {{\n    kind: KIND_GPU\n    count: {instances}\n  }}\n]\n"
    )


def write_model(model_dir: Path, name: str, plan: Path, inputs: list[TensorSpec], outputs: list[TensorSpec],
                instances: int = 1, place: Callable[[str, str], object] = shutil.copyfile) -> None:
    """The model `name` of a repository, made at `model_dir` (a temporary name: the caller publishes it). Also a
    component of ptdit-serve repository's components layout. place(source, target) puts the plan there."""
    (model_dir / "1").mkdir(parents=True)
    place(str(plan), str(model_dir / "1" / "model.plan"))
    (model_dir / "config.pbtxt").write_text(config_pbtxt(name, inputs, outputs, instances))
