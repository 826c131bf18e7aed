"""A graph against the manifest beside it: a manifest can be copied, edited or re-stamped, so every stage that
loads a graph checks that the graph is the one the manifest describes before any work (the I/O names, shapes and
dtypes, and what ptdit-export recorded inside the graph itself) and refuses a mismatch in one line.

    mismatches(want_in, want_out, got_in, got_out)   the I/O contract (a plan's I/O is checked the same way)
    graph_records(...)                              what an export writes into the ONNX's metadata_props
    check_onnx(path, manifest)                      for a loaded ONNX proto (onnx imported lazily)
    check_io(path, want_in, want_out, got_in, got_out), check_recorded(path, manifest, metadata)
                                                    for a graph a runtime loaded (ONNX Runtime's I/O and metadata)
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, Collection, Sequence

from .dtypes import dtype_of_element_type
from .errors import InputError
from .files import json_text
from .onnx_manifest import OnnxManifest, TensorSpec

if TYPE_CHECKING:
    from pathlib import Path

    import onnx

FIX = "re-export it, and keep the files of one export together"


def mismatches(want_inputs: Sequence[TensorSpec], want_outputs: Sequence[TensorSpec],
               got_inputs: Sequence[TensorSpec], got_outputs: Sequence[TensorSpec]) -> list[str]:
    """How `got` differs from `want`: tensors missing or unexpected, or of another direction, shape or dtype."""
    got = {t.name: ("input", t) for t in got_inputs} | {t.name: ("output", t) for t in got_outputs}
    want = {t.name: ("input", t) for t in want_inputs} | {t.name: ("output", t) for t in want_outputs}
    problems = [f"{n} missing" for n in want if n not in got] + [f"unexpected {n}" for n in got if n not in want]
    for name in want.keys() & got.keys():
        (got_mode, got_spec), (want_mode, want_spec) = got[name], want[name]
        pairs = {"mode": (got_mode, want_mode), "shape": (list(got_spec.shape), list(want_spec.shape)),
                 "dtype": (got_spec.dtype, want_spec.dtype)}
        problems += [f"{name} {key} is {a}, the manifest says {b}" for key, (a, b) in pairs.items() if a != b]
    return sorted(problems)


def graph_records(config: dict[str, Any], precision: str, graph: str) -> dict[str, str]:
    """What ptdit-export writes into the graph (ONNX metadata_props): the model config's sha256, the precision
    and the kind of graph, so that a manifest of another export cannot pass for this graph's."""
    return {"ptdit.config_sha256": hashlib.sha256(json_text(config).encode()).hexdigest(),
            "ptdit.precision": precision, "ptdit.graph": graph}


def check_recorded(path: Path, manifest: OnnxManifest, metadata: dict[str, str]) -> None:
    """The graph's records (an export of an earlier version has none) must be the manifest's."""
    expected = graph_records(manifest.model.config, manifest.precision, manifest.export.graph)
    differ = [key.removeprefix("ptdit.") for key, value in expected.items()
              if key in metadata and metadata[key] != value]
    if differ:
        raise InputError(f"{path.name} is not the graph its manifest describes (the graph records another "
                         f"{', '.join(differ)}): {FIX}")


def check_io(path: Path, want_inputs: Sequence[TensorSpec], want_outputs: Sequence[TensorSpec],
             got_inputs: Sequence[TensorSpec], got_outputs: Sequence[TensorSpec]) -> None:
    """The graph's I/O (`got`) must be the manifest's (`want`)."""
    problems = mismatches(want_inputs, want_outputs, got_inputs, got_outputs)
    if problems:
        raise InputError(f"{path.name}: the graph's I/O is not the manifest's ({'; '.join(problems[:4])}): {FIX}")


def load_onnx_graph(path: Path) -> onnx.ModelProto:
    """The ONNX without its external weights; a file that is not one (text, cut short) is refused in one line."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError, and whatever a file of another kind makes it raise
        raise InputError(f"{path} is not an ONNX model ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                         f"): pass an ONNX written by ptdit-export") from None
    if not model.graph.node:
        raise InputError(f"{path} is not an ONNX model (no graph): pass an ONNX written by ptdit-export")
    return model


def tensor_specs(values: Any, skip: Collection[str] = ()) -> list[TensorSpec]:
    """onnx ValueInfoProtos -> TensorSpecs (a dimension without a value is -1)."""
    specs = []
    for v in values:
        if v.name in skip:
            continue
        tensor = v.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
        specs.append(TensorSpec(v.name, shape, dtype_of_element_type(tensor.elem_type)))
    return specs


def check_onnx(path: Path, manifest: OnnxManifest) -> onnx.ModelProto:
    """The ONNX at `path` (weights not loaded), checked against `manifest`; returned for further checks."""
    model = load_onnx_graph(path)
    initializers = {t.name for t in model.graph.initializer}
    check_io(path, manifest.inputs, manifest.outputs, tensor_specs(model.graph.input, initializers),
             tensor_specs(model.graph.output))
    check_recorded(path, manifest, {p.key: p.value for p in model.metadata_props})
    return model
