"""What ptdit-diff shows: the table on screen (an artifact's or a pipeline folder's), the error-per-block plot, and
the report as strict JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def table(result: dict[str, Any]) -> str:
    lines = [f"{result['artifact']} on {result['backend']} ({result['precision']})", "",
             "| reference | what | max abs | mean abs | rel L2 | cosine | outside tol |",
             "| --- | --- | --- | --- | --- | --- | --- |"]

    def row(reference: str, what: str, m: dict[str, Any]) -> str:
        return (f"| {reference} | {what} | {m['max_abs']:.3e} | {m['mean_abs']:.3e} | {m['rel_l2']:.3e} | "
                f"{m['cosine']:.6f} | {m['outside_tolerance']:.2%} |")

    notes: list[str] = []
    for entry in result["references"].values():
        label = f"torch {entry['precision']}"
        for name, m in entry["outputs"].items():
            lines.append(row(label, name, m))
        if "trajectory" in entry:
            lines.append(row(label, f"latent after {entry['trajectory']['steps']} steps", entry["trajectory"]))
            per_step = entry["trajectory"].get("noise_pred_rel_l2_per_step")
            if per_step:
                worst = max(range(len(per_step)), key=per_step.__getitem__)
                notes.append(f"vs {label}: noise_pred along the trajectory, on the inputs the artifact saw: rel L2 "
                             f"{per_step[0]:.3e} at step 0, {per_step[-1]:.3e} at the last, at most "
                             f"{per_step[worst]:.3e} (step {worst})")
        for i, m in enumerate(entry.get("blocks", [])):
            lines.append(row(label, f"block {i}", m))
        if "blocks" in entry:
            first = entry["first_divergent_block"]
            lines.append("")
            lines.append(f"vs {label}: first block over the rel L2 threshold: "
                         f"{'none' if first is None else first}; largest jump at block {entry['largest_jump_block']}")
    if notes:
        lines.append("")
        lines += notes
    if result.get("blocks_note"):
        lines.append(f"blocks: {result['blocks_note']}")
    lines.append("")
    lines.append("PASSED" if result["passed"] else "FAILED: " + "; ".join(result["failures"]))
    return "\n".join(lines)


def has_blocks(result: dict[str, Any]) -> bool:
    """Whether the report compared per block (then it has a plot)."""
    return any("blocks" in entry for entry in result["references"].values())


def plot(result: dict[str, Any], path: Path) -> None:
    """Relative L2 error per block (log scale), one line per reference, as a PNG at `path`."""
    entries = {k: v for k, v in result["references"].items() if "blocks" in v}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for entry in entries.values():
        errors = [max(m["rel_l2"], 1e-12) for m in entry["blocks"]]
        ax.plot(range(len(errors)), errors, marker="o", label=f"vs PyTorch {entry['precision']}")
    ax.axhline(result["thresholds"]["max_rel_l2"], color="grey", linestyle="--", label="rel L2 threshold")
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("transformer block")
    ax.set_ylabel("relative L2 error of the block output")
    ax.set_title(f"{result['artifact']} ({result['backend']})", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def pipeline_table(result: dict[str, Any]) -> str:
    lines = [f"{result['pipeline']}: prompt {result['prompt']!r}, seed {result['seed']}", "",
             "| component | artifact | backend | rel L2 | max abs | cosine |", "| --- | --- | --- | --- | --- | --- |"]
    for label, entry in result["components"].items():
        if label.split(" ")[0] in ("transformer", "step_graph"):  # each size's: "transformer 768x1408"
            out = entry["references"]["fp32"]["outputs"]
            m = next(iter(out.values()))
            lines.append(f"| {label.replace('_', ' ')} | {entry['artifact']} | {entry['backend']} | "
                         f"{m['rel_l2']:.3e} | {m['max_abs']:.3e} | {m['cosine']:.6f} |")
        else:
            lines.append(f"| {label} | {entry['artifact']} | {entry['backend']} | {entry['rel_l2']:.3e} | "
                         f"{entry['max_abs']:.3e} | {entry['cosine']:.6f} |")
    for key in (k for k in result if k.split(" ")[0] in ("image", "video")):  # one per size, the first unnamed
        pictures, at = result[key], key.partition(" ")[2]
        where = f" at {at}" if at else ""
        if key.startswith("video"):
            lines += ["", f"video{where} after {pictures['steps']} steps against the PyTorch fp32 pipeline: worst "
                          f"frame {pictures['worst_frame']} of {pictures['video_frames']} PSNR "
                          f"{pictures['worst_frame_psnr_db']:.2f} dB (min {pictures['min_psnr_db']:g}), clip PSNR "
                          f"{pictures['psnr_db']:.2f} dB, max abs {pictures['max_abs']} / 255, mean abs "
                          f"{pictures['mean_abs']:.3f}"]
        else:
            lines += ["", f"image{where} after {pictures['steps']} steps against the PyTorch fp32 pipeline: PSNR "
                          f"{pictures['psnr_db']:.2f} dB (min {pictures['min_psnr_db']:g}), max abs "
                          f"{pictures['max_abs']} / 255, mean abs {pictures['mean_abs']:.3f}"]
    lines += ["", "PASSED" if result["passed"] else "FAILED: " + "; ".join(result["failures"])]
    return "\n".join(lines)


def report_json(result: Any) -> str:
    """The report as strict JSON: a NaN or infinite metric is written as the string "nan", "inf" or "-inf" (JSON
    has no such numbers; Python would write bare NaN tokens that other parsers refuse)."""
    def strict(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        if isinstance(value, dict):
            return {k: strict(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [strict(v) for v in value]
        return value

    return json.dumps(strict(result), indent=2, allow_nan=False) + "\n"

