"""The structural checks of an exported file: onnx's checker, static shapes, no random operators, and TensorRT's
operator table and rank limit. Each returns the details recorded in the manifest, or raises CheckFailed."""

from __future__ import annotations

import collections
import re
from pathlib import Path
from typing import Any

import onnx

from . import CheckFailed
from .operator_table import TABLE_NAME, unsupported_ops

RANDOM_OPS = re.compile(r"^(Random\w*|Bernoulli|Multinomial)$")
TENSORRT_MAX_RANK = 8  # Dims::MAX_DIMS: TensorRT's parser rejects any tensor of higher rank
_SHOWN = 5


def _listing(items: list[str]) -> str:
    more = f" (and {len(items) - _SHOWN} more)" if len(items) > _SHOWN else ""
    return "; ".join(items[:_SHOWN]) + more


def onnx_checker(path: Path) -> dict[str, Any]:
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise CheckFailed("onnx_checker", str(e).strip().splitlines()[0]) from None
    return {"full_check": True}


def infer_shapes(path: Path) -> onnx.ModelProto:
    """Shape-inferred graph, in memory with the weights not loaded (a graph past 2 GiB keeps them in external
    data). Not inferred file to file: onnx writes that file natively and, on a full disk, cuts it short without
    an error."""
    return onnx.shape_inference.infer_shapes(onnx.load(str(path), load_external_data=False), strict_mode=True,
                                             data_prop=True)


def static_shapes(model: onnx.ModelProto) -> dict[str, Any]:
    graph = model.graph
    known = {v.name: v for v in [*graph.input, *graph.output, *graph.value_info]}
    problems = []
    produced = (o for n in graph.node for o in n.output)
    for name in [*(v.name for v in graph.input), *produced, *(v.name for v in graph.output)]:
        value = known.get(name)
        if value is None or not value.type.tensor_type.HasField("shape"):
            problems.append(f"'{name}' has no inferred shape")
            continue
        dims = value.type.tensor_type.shape.dim
        if any(not d.HasField("dim_value") or d.dim_value <= 0 for d in dims):
            shown = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]
            problems.append(f"'{name}' has shape {shown}")
    if problems:
        raise CheckFailed("static_shapes", f"{len(problems)} values are not static: {_listing(problems)}")
    return {"values": len(known)}


def no_random_ops(model: onnx.ModelProto) -> dict[str, Any]:
    found = sorted({n.op_type for n in model.graph.node if RANDOM_OPS.match(n.op_type)})
    if found:
        raise CheckFailed("no_random_ops", f"the graph draws random numbers ({', '.join(found)}); export uses the "
                                           f"deterministic proxy modes only")
    return {}


def ranks(model: onnx.ModelProto) -> dict[str, int]:
    """Rank of every value of a shape-inferred graph (inputs, initializers, node outputs)."""
    graph = model.graph
    found = {t.name: len(t.dims) for t in graph.initializer}
    for v in [*graph.input, *graph.output, *graph.value_info]:
        if v.type.tensor_type.HasField("shape"):
            found[v.name] = len(v.type.tensor_type.shape.dim)
    return found


def tensorrt_ops(model: onnx.ModelProto) -> dict[str, Any]:
    """Operators and types against TensorRT's support table, and no value above TensorRT's maximum rank."""
    value_ranks = ranks(model)
    too_high = [f"'{name}' has rank {r}" for name, r in sorted(value_ranks.items()) if r > TENSORRT_MAX_RANK]
    if too_high:
        raise CheckFailed("tensorrt_ops", f"{len(too_high)} values have more than {TENSORRT_MAX_RANK} dimensions, "
                                          f"which TensorRT cannot represent: {_listing(too_high)}")
    problems = unsupported_ops(model)
    if problems:
        raise CheckFailed("tensorrt_ops", f"{len(problems)} problems against {TABLE_NAME}: {_listing(problems)}")
    counts = collections.Counter(n.op_type for n in model.graph.node)
    return {"table": TABLE_NAME, "ops": dict(sorted(counts.items())), "max_rank": max(value_ranks.values(), default=0)}
