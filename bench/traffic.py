"""The memory traffic of the exported graph: the operators that move data without computing (window partition,
shift, proxies, heads) and the bytes they move, per block and per step, with the time that traffic takes at each
GPU's published memory bandwidth. An estimate, not a measurement: a copy is counted as reading and writing its
output once; a view (Reshape and the like) as free, which TensorRT makes it where the layout allows; and whether
TensorRT fuses a copy into its neighbours is not known before a build on the GPU."""

from __future__ import annotations

import math
from collections import Counter
from typing import TYPE_CHECKING, Any

from ptdit.contract.progress import Reporter

if TYPE_CHECKING:
    import onnx_ir

COPIES = ("Transpose", "Slice", "Concat", "Gather", "GatherElements", "Expand", "Split", "Pad", "Tile", "ScatterND",
          "Where")
VIEWS = ("Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity")
# Published peak memory bandwidth, GB/s (vendor data sheets: H100 SXM5, H200 SXM, L40S, GeForce RTX 4090, 5090).
BANDWIDTH_GBS = {"H100": 3350, "H200": 4800, "L40S": 864, "RTX 4090": 1008, "RTX 5090": 1792}
SCOPE_KEY = "pkg.torch.onnx.name_scopes"


def block_of(node: onnx_ir.Node) -> int | None:
    """The transformer block a node was traced from (its torch.onnx name scopes), else None."""
    for scope in node.metadata_props.get(SCOPE_KEY, "").strip("[]").replace("'", "").split(", "):
        parts = scope.split(".")
        if len(parts) == 2 and parts[0] == "transformer_blocks" and parts[1].isdigit():
            return int(parts[1])
    return None


def value_bytes(value: onnx_ir.Value | None) -> int:
    if value is None or value.shape is None or value.dtype is None:
        return 0
    dims = [d for d in value.shape if isinstance(d, int)]
    if len(dims) != len(value.shape):
        raise ValueError(f"{value.name} has no static shape")
    return int(math.prod(dims) * value.dtype.itemsize)


def graph_traffic(model: onnx_ir.Model) -> dict[str, Any]:
    """Per block (block 0; every block has the same operators) and for the whole graph: node counts, copy and
    view counts by operator, and the bytes the copies move (read + write of each output)."""
    total: Counter[str] = Counter()
    block: Counter[str] = Counter()
    moved = {"block": 0, "step": 0}
    block_bytes: Counter[str] = Counter()
    nodes = {"block": 0, "step": 0}
    for node in model.graph:
        in_block = block_of(node) == 0
        nodes["step"] += 1
        nodes["block"] += in_block
        if node.op_type in COPIES or node.op_type in VIEWS:
            total[node.op_type] += 1
            block[node.op_type] += in_block
        if node.op_type in COPIES:
            size = 2 * sum(value_bytes(v) for v in node.outputs)
            moved["step"] += size
            moved["block"] += size if in_block else 0
            block_bytes[node.op_type] += size if in_block else 0
    return {"nodes_per_block": nodes["block"], "nodes": nodes["step"],
            "copies_per_block": {k: block[k] for k in COPIES if block[k]},
            "views_per_block": {k: block[k] for k in VIEWS if block[k]},
            "copies": {k: total[k] for k in COPIES if total[k]}, "views": {k: total[k] for k in VIEWS if total[k]},
            "copy_bytes_per_block": moved["block"], "copy_bytes": moved["step"],
            "copy_bytes_per_block_by_op": dict(block_bytes.most_common()),
            "estimated_us_per_step": {gpu: round(moved["step"] / (gbs * 1e9) * 1e6, 1)
                                      for gpu, gbs in BANDWIDTH_GBS.items()}}


def traffic_rows(preset_name: str, resolutions: tuple[int, ...], precision: str,
                 report: Reporter) -> list[dict[str, Any]]:
    """Trace the model (seeded weights; nothing written) at each resolution and measure its graph."""
    from export.exporter import build_model, clean, strip_block_outputs, trace
    from export.spec import ExportSpec
    from ptdit import preset
    from ptdit.contract.sizes import Size

    cfg = preset(preset_name)
    model, _ = build_model(cfg, "fp16" if precision == "fp8" else precision)
    rows = []
    for res in resolutions:
        report(f"  tracing {cfg.name} at {res} ({precision}) and counting its data movement")
        spec = ExportSpec(cfg.name, Size(res, res), None, 2, 200, precision, 18)
        outputs = spec.outputs(cfg.out_channels, cfg.in_channels)
        graph = trace(model, spec, spec.inputs(cfg.in_channels, cfg.text_dim), outputs)
        clean(graph, set(model.state_dict()))
        strip_block_outputs(graph, len(outputs))
        rows.append({"preset": preset_name, "res": res, "precision": precision, "depth": cfg.depth,
                     **graph_traffic(graph)})
        del graph
    return rows


def traffic_table(rows: list[dict[str, Any]]) -> str:
    gpus = list(BANDWIDTH_GBS)
    lines = ["| preset | res | nodes per block | copies per block (Transpose / Slice / other) | views per block | "
             "copy MB per block | copy MB per step | " + " | ".join(f"est. {g} us/step" for g in gpus) + " |",
             "| --- " * (7 + len(gpus)) + "|"]
    for r in rows:
        c = r["copies_per_block"]
        other = sum(v for k, v in c.items() if k not in ("Transpose", "Slice"))
        lines.append(f"| {r['preset']} | {r['res']} | {r['nodes_per_block']} | "
                     f"{sum(c.values())} ({c.get('Transpose', 0)}"
                     f" / {c.get('Slice', 0)} / {other}) | {sum(r['views_per_block'].values())} | "
                     f"{r['copy_bytes_per_block'] / 1e6:.1f} | {r['copy_bytes'] / 1e6:.0f} | "
                     + " | ".join(str(r["estimated_us_per_step"][g]) for g in gpus) + " |")
    lines.append("Estimates at the published bandwidths: each copy reads and writes its output once; views are free.")
    return "\n".join(lines)
