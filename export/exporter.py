"""PyTorch -> ONNX: build the model in the export precision, trace it with static shapes, clean the graph.

Exporter choice (measured on xl at 1024, fp16, 2 CPU cores; see docs/benchmarks.md, "Exporters compared"): torch.onnx's
torch.export-based exporter traces with fake tensors, so no forward pass runs; its built-in optimizer is
skipped because its pattern rewriter alone took ~530 s on this graph. Instead the graph gets constant
folding with shape inference, dead-node removal, constant lifting, initializer de-duplication and CSE,
which leave only static ops. The TorchScript exporter was slower (~285 s, 9.6 GB peak RSS) because its
trace runs a real fp16 forward on the CPU.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from ptdit.contract.dtypes import PRECISION_DTYPES
from ptdit.contract.onnx_manifest import TensorSpec, Weights

from .spec import ExportSpec, block_output_name

if TYPE_CHECKING:
    import onnx_ir
    import torch

    from ptdit import PTDiT, PTDiTConfig

# Initializers above this total size go to an external data file (protobuf's hard limit is 2 GiB).
EXTERNAL_DATA_THRESHOLD = 1 << 30


def torch_dtype(precision: str) -> torch.dtype:
    import torch

    dtype: torch.dtype = getattr(torch, PRECISION_DTYPES[precision])
    return dtype


def build_model(cfg: PTDiTConfig, precision: str, checkpoint: str | None = None,
                checkpoint_key: str | None = None, seed: int = 0) -> tuple[PTDiT, Weights]:
    """The model in eval mode and in the export precision (cast before loading, so a checkpoint never
    coexists with an fp32 copy of the model)."""
    from ptdit import PTDiT, load_checkpoint

    model = PTDiT(cfg, seed=seed).eval().to(torch_dtype(precision))
    if checkpoint is None:
        return model, Weights("seeded", seed=seed)
    sha = load_checkpoint(model, checkpoint, key=checkpoint_key)
    return model, Weights("checkpoint", path=str(checkpoint), sha256=sha, key=checkpoint_key)


def example_inputs(inputs: list[TensorSpec]) -> tuple[torch.Tensor, ...]:
    import torch

    return tuple(torch.zeros(t.shape, dtype=getattr(torch, t.dtype)) for t in inputs)


def trace(model: PTDiT, spec: ExportSpec, inputs: list[TensorSpec], outputs: list[TensorSpec]) -> onnx_ir.Model:
    """Trace to an ONNX IR model whose outputs are the contract's (noise_pred, or latent_next and step_next for
    a step graph) and the per-block outputs block_NN (kept as named tensors so that the accuracy diff can mark
    them as outputs again; see strip_block_outputs)."""

    from ptdit.step import DenoisingStep

    module = DenoisingStep(model) if spec.step else model
    output_names = [t.name for t in outputs] + [block_output_name(i) for i in range(model.cfg.depth)]
    return trace_module(module, inputs, output_names, spec.opset, {"return_block_outputs": True})


def trace_component(module: torch.nn.Module, inputs: list[TensorSpec], outputs: list[TensorSpec],
                    opset: int) -> onnx_ir.Model:
    """A pipeline component (or a cut of one) traced and cleaned: its outputs are the contract's."""
    graph = trace_module(module, inputs, [t.name for t in outputs], opset)
    clean(graph, set(module.state_dict()))
    return graph


def trace_module(module: torch.nn.Module, inputs: list[TensorSpec], output_names: list[str], opset: int,
                 kwargs: dict[str, Any] | None = None) -> onnx_ir.Model:
    """torch.onnx.export(dynamo=True) with fake tensors of the inputs' static shapes; its optimizer off (see
    the module docstring), its chatter silenced."""
    import torch

    quiet = io.StringIO()
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(quiet), _quiet_torch_logs():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            example_inputs(inputs),
            kwargs=kwargs or {},
            dynamo=True,
            optimize=False,
            opset_version=opset,
            input_names=[t.name for t in inputs],
            output_names=output_names,
            verbose=False,
        )
    assert program is not None
    return program.model


@contextlib.contextmanager
def _quiet_torch_logs() -> Iterator[None]:
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch._dynamo", "torch.export", "torch._export")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def clean(model: onnx_ir.Model, parameter_names: set[str]) -> None:
    """Fold everything that is constant at this shape, then tidy up. In place.

    Folding turns a Linear weight W into an initializer holding W^T; it is renamed back to the PyTorch
    parameter name, so weights stay findable by name (refit, the accuracy diff) in [in, out] layout."""
    from onnx_ir.passes import common
    from onnxscript.optimizer import FOLDED_FROM_KEY, _constant_folding

    limit = 1 << 24  # elements: large enough to fold casts of the position embedding and the window masks
    passes = [
        _constant_folding.FoldConstantsPass(shape_inference=True, input_size_limit=limit, output_size_limit=limit),
        common.RemoveUnusedNodesPass(),
        common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
        common.DeduplicateInitializersPass(),
        common.CommonSubexpressionEliminationPass(),
        common.RemoveUnusedNodesPass(),
    ]
    for p in passes:
        p(model)
    initializers = model.graph.initializers
    for name, value in list(initializers.items()):
        sources = parameter_names & set(value.meta.get(FOLDED_FROM_KEY, ()))
        if len(sources) == 1 and (source := sources.pop()) not in initializers:
            initializers.pop(name)
            value.name = source
            initializers[source] = value


def strip_block_outputs(model: onnx_ir.Model, outputs: int) -> list[str]:
    """Keep the contract's `outputs` first graph outputs; the block tensors keep their names inside the graph."""
    graph = model.graph
    names = [v.name for v in graph.outputs[outputs:]]
    del graph.outputs[outputs:]
    return [n for n in names if n]


def initializer_bytes(model: onnx_ir.Model) -> int:
    return sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)


# The one piece of the tracer's metadata an exported graph keeps: each node's torch.onnx `namespace`, the module path
# and classes it was traced from (": ptdit.model.PTDiT/transformer_blocks.0: ptdit.model.PTDiTBlock/..."), which graph
# viewers (Netron, Model Explorer) group nodes by. Everything else is dropped: `pkg.torch.onnx.stack_trace` names
# each source file by its absolute path (the builder's directory layout, and bytes that differ between two checkouts
# of the same code); fx_node, name_scopes and class_hierarchy repeat the namespace in torch.fx's terms; torch.export's
# graph signature, input/output specs and original node names, and onnxscript's folded_from, are tracing bookkeeping.
KEPT_NODE_METADATA = ("namespace",)


def strip_build_metadata(model: onnx_ir.Model) -> None:
    """Drop what tracing and cleaning left in the model's metadata and doc strings but what KEPT_NODE_METADATA
    names, in every graph, subgraph and function. In place; names, shapes and weights are untouched. What an
    export writes is then the same bytes from any folder on any machine, and names none of its paths."""
    import onnx_ir

    model.doc_string = None
    model.metadata_props.clear()
    graphs: list[onnx_ir.Graph | onnx_ir.Function] = [model.graph, *model.graph.subgraphs()]
    for function in model.functions.values():
        graphs += [function, *function.subgraphs()]
    for graph in graphs:
        graph.doc_string = None
        graph.metadata_props.clear()
        values = [*graph.inputs, *graph.outputs]
        if isinstance(graph, onnx_ir.Graph):
            values += graph.initializers.values()
        for node in graph:
            node.doc_string = None
            for key in [k for k in node.metadata_props if k not in KEPT_NODE_METADATA]:
                del node.metadata_props[key]
            for attr in node.attributes.values():
                attr.doc_string = None
            values += node.outputs
        for value in values:
            if value is not None:
                value.doc_string = None
                value.metadata_props.clear()


def save(model: onnx_ir.Model, path: Path, records: dict[str, str], external: bool = False) -> list[Path]:
    """Write the model (with `<name>.data` external weights when large, or `external`), with `records` (what the
    manifest says of it: ptdit.contract.graph_check.graph_records) in its metadata and none of the tracer's but each
    node's namespace (strip_build_metadata); returns the files written. Every graph ptdit-export writes goes through
    here."""
    import onnx_ir

    strip_build_metadata(model)
    model.producer_name = "ptdit-export"
    model.metadata_props.update(records)
    if external or initializer_bytes(model) > EXTERNAL_DATA_THRESHOLD:
        data = path.with_name(path.name + ".data")
        onnx_ir.save(model, path, external_data=data.name)
        return [path, data]
    onnx_ir.save(model, path)
    return [path]
