"""A Triton Inference Server model repository for a plan: <repo>/<name>/config.pbtxt and <repo>/<name>/1/model.plan."""

from __future__ import annotations

import shutil
from pathlib import Path

from ptdit.contract.errors import InputError
from ptdit.contract.onnx_manifest import TensorSpec

TRITON_TYPES = {
    "float32": "TYPE_FP32", "float16": "TYPE_FP16", "bfloat16": "TYPE_BF16", "int64": "TYPE_INT64",
    "int32": "TYPE_INT32", "int8": "TYPE_INT8", "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL",
}


def _tensor(t: TensorSpec) -> str:
    try:
        dtype = TRITON_TYPES[t.dtype]
    except KeyError:
        raise InputError(f"tensor {t.name} has dtype {t.dtype}, which Triton has no type for") from None
    dims = ", ".join(str(d) for d in t.shape)
    return f'  {{\n    name: "{t.name}"\n    data_type: {dtype}\n    dims: [ {dims} ]\n  }}'


def config_pbtxt(name: str, inputs: list[TensorSpec], outputs: list[TensorSpec]) -> str:
    """Static shapes, so max_batch_size 0 and the full shape (batch included) in dims."""
    return (
        f'name: "{name}"\n'
        'platform: "tensorrt_plan"\n'
        "max_batch_size: 0\n"
        "input [\n" + ",\n".join(_tensor(t) for t in inputs) + "\n]\n"
        "output [\n" + ",\n".join(_tensor(t) for t in outputs) + "\n]\n"
        "instance_group [\n  {\n    kind: KIND_GPU\n    count: 1\n  }\n]\n"
    )


def write_model(model_dir: Path, name: str, plan: Path, inputs: list[TensorSpec], outputs: list[TensorSpec]) -> None:
    """The model `name` of a repository, made at `model_dir` (a temporary name: the caller publishes it)."""
    (model_dir / "1").mkdir(parents=True)
    shutil.copyfile(plan, model_dir / "1" / "model.plan")
    (model_dir / "config.pbtxt").write_text(config_pbtxt(name, inputs, outputs))
