"""Complexity: multiply-adds of PT-DiT and of the full-attention DiT of the same size, counted from the model
(ptdit.count_macs) and from the traced ONNX graph (graph_macs), and the paper's analytic attention ratio."""

from __future__ import annotations

from typing import Any

from ptdit.contract.progress import Reporter
from ptdit.contract.sizes import Size

PAPER_RATIOS = {256: 0.343, 512: 0.097, 1024: 0.047, 2048: 0.023}  # Qihoo-T2X, attention cost vs full attention
RESOLUTIONS = (256, 512, 1024, 2048)
SIZES = "1024:common"  # its sizes that are not square (16:9, 9:16, 4:3, 3:4) join the square rows
VIDEO = ((256, 8), (256, 16), (512, 8), (512, 16))  # res, latent frames (29 and 61 frames out)
Shape = tuple[int | Size, int | None]  # a square side or a size, and latent frames


def complexity_rows(preset_name: str, onnx: bool, report: Reporter) -> list[dict[str, Any]]:
    from export.options import sizes_of
    from ptdit import attention_cost_ratio, count_macs, preset

    cfg = preset(preset_name)
    sizes = [size for size in sizes_of(None, [SIZES]) if not size.square]
    shapes: list[Shape] = [(r, None) for r in RESOLUTIONS] + [(s, None) for s in sizes] + list(VIDEO)
    rows = []
    counted = graph_counts(cfg, shapes, report) if onnx else {}
    for res, frames in shapes:
        row: dict[str, Any] = {"res": res if isinstance(res, int) else str(res), "frames": frames,
                               "analytic_ratio": attention_cost_ratio(res, frames),
                               "paper_ratio": PAPER_RATIOS.get(res) if frames is None and isinstance(res, int)
                               else None}
        for attention in ("proxy", "full"):
            macs = count_macs(cfg.replace(attention=attention), res, frames, batch=2)
            row[attention] = {"linear": macs.linear, "attention": macs.attention}
            graph = counted.get((attention, res, frames))
            if graph is not None:
                row[attention]["onnx"] = graph
                row[attention]["agree"] = graph == {"linear": macs.linear, "attention": macs.attention}
        rows.append(row)
    return rows


def graph_counts(cfg: Any, shapes: list[Shape], report: Reporter) -> dict[Any, Any]:
    """Trace the real model (seeded weights; nothing written) at each shape and count its graph."""
    import gc

    from export.exporter import build_model, clean, strip_block_outputs, trace
    from export.spec import ExportSpec

    from .graph_macs import graph_macs

    counts = {}
    for attention in ("proxy", "full"):
        variant = cfg.replace(attention=attention)
        model, _ = build_model(variant, "fp16")
        names = set(model.state_dict())
        for res, frames in shapes:
            report(f"  counting the ONNX graph of {variant.name} ({attention} attention) at {res}"
                   + (f", {frames} frames" if frames else ""))
            spec = ExportSpec(variant.name, res if isinstance(res, Size) else Size(res, res), frames, 2, 200, "fp16",
                              18)
            outputs = spec.outputs(variant.out_channels, variant.in_channels)
            graph = trace(model, spec, spec.inputs(variant.in_channels, variant.text_dim), outputs)
            clean(graph, names)
            strip_block_outputs(graph, len(outputs))
            counts[(attention, res, frames)] = graph_macs(graph)
            del graph
        del model
        gc.collect()
    return counts


def complexity_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| shape | analytic attention ratio (paper) | PT-DiT GMAC (attention) | full-attention GMAC (attention) | "
             "PT-DiT / full, total | attention | ONNX graph agrees |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        shape = f"{r['res']}" + (f" x {r['frames']} frames" if r["frames"] else "")
        paper = f" ({r['paper_ratio'] * 100:.1f} %)" if r["paper_ratio"] else ""
        p, f = r["proxy"], r["full"]
        p_total, f_total = p["linear"] + p["attention"], f["linear"] + f["attention"]
        agree = "n/a" if "agree" not in p else ("yes" if p["agree"] and f["agree"] else "NO")
        lines.append(f"| {shape} | {r['analytic_ratio'] * 100:.2f} %{paper} | "
                     f"{p_total / 1e9:,.1f} ({p['attention'] / 1e9:,.1f}) | "
                     f"{f_total / 1e9:,.1f} ({f['attention'] / 1e9:,.1f}) | {p_total / f_total:.3f} | "
                     f"{p['attention'] / f['attention']:.4f} | {agree} |")
    return "\n".join(lines)
