"""The accuracy diff: the same seeded inputs through the PyTorch reference and through an artifact, compared
per output, per transformer block, and over a whole sampling trajectory.

Element-wise statistics and the rtol/atol verdict come from polygraphy's comparison functions
(SimpleCompareFunc); relative L2, cosine and the share of elements outside the tolerance are added here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .artifact import Artifact, load_artifact
from .errors import InputError
from .sampler import initial_noise, make_conditioning
from .step_sampler import make_sampler
from .tensorrt_flavour import TensorRTOptions

REPORT_SCHEMA = "ptdit-diff/1"
Reporter = Callable[[str], None]


@dataclass(frozen=True)
class Thresholds:
    rtol: float
    atol: float
    max_rel_l2: float  # of each output
    max_trajectory_rel_l2: float  # of the final latent after the sampling run


# Defaults per artifact precision, from measurement (README, "Accuracy diff"): 3-10x the largest errors
# measured through ONNX Runtime for the tiny model (256, 1024) and the xl model (256).
DEFAULT_THRESHOLDS = {
    "fp32": Thresholds(rtol=1e-3, atol=1e-4, max_rel_l2=1e-5, max_trajectory_rel_l2=1e-4),
    "fp16": Thresholds(rtol=2e-2, atol=5e-2, max_rel_l2=1e-2, max_trajectory_rel_l2=2e-2),
    "bf16": Thresholds(rtol=1e-1, atol=0.5, max_rel_l2=1e-1, max_trajectory_rel_l2=0.2),
}


def compare(actual: np.ndarray, expected: np.ndarray, rtol: float, atol: float) -> dict[str, Any]:
    """Metrics of `actual` against `expected` (the reference)."""
    from polygraphy.comparator import IterationResult
    from polygraphy.comparator.compare import SimpleCompareFunc
    from polygraphy.logger import G_LOGGER

    G_LOGGER.module_severity = G_LOGGER.CRITICAL
    a, e = actual.astype(np.float32), expected.astype(np.float32)
    verdict = SimpleCompareFunc(rtol=rtol, atol=atol, check_error_stat="elemwise")(
        IterationResult({"t": a}, runner_name="artifact"), IterationResult({"t": e}, runner_name="reference"))["t"]
    a64, e64 = a.astype(np.float64).ravel(), e.astype(np.float64).ravel()
    diff = np.abs(a64 - e64)
    norm_e = float(np.linalg.norm(e64))
    return {
        "max_abs": verdict.max_absdiff,
        "mean_abs": verdict.mean_absdiff,
        "median_abs": verdict.median_absdiff,
        "max_rel": verdict.max_reldiff,
        "rel_l2": float(np.linalg.norm(a64 - e64)) / max(norm_e, 1e-30),
        "cosine": float(a64 @ e64) / max(float(np.linalg.norm(a64)) * norm_e, 1e-30),
        "outside_tolerance": float(np.mean(diff > atol + rtol * np.abs(e64))),
        "within_tolerance": bool(verdict),
    }


MID_TRAJECTORY_T = 700.0


def diff_inputs(artifact: Artifact, seed: int) -> dict[str, np.ndarray]:
    """Seeded inputs in the artifact's shapes: Gaussian latents (one per batch element), a mid-trajectory
    timestep, and the sampler's random text pair (the unconditional mask has one token). A step artifact
    runs step 1 of a schedule from t = 700 to t = -300: dt = 1, so its update is the (guided) velocity."""
    latent = artifact.spec("latent")
    text_spec = artifact.spec("text_embeds")
    text = make_conditioning(text_spec.shape[1], text_spec.shape[2], random_seed=seed)
    batch = text_spec.shape[0]
    feeds = {
        "latent": initial_noise(latent.shape, seed),
        "text_embeds": np.resize(text.embeds, (batch, *text.embeds.shape[1:])),
        "text_mask": np.resize(text.mask, (batch, text.mask.shape[1])),
    }
    if not artifact.is_step:
        return {**feeds, "timestep": np.full(batch, MID_TRAJECTORY_T, dtype=np.float32)}
    schedule = np.zeros(artifact.spec("schedule").shape, dtype=np.float32)
    schedule[:3] = (1000.0, MID_TRAJECTORY_T, MID_TRAJECTORY_T - 1000.0)
    feeds.update(step=np.ones(1, dtype=np.int64), schedule=schedule)
    if artifact.export["step"]["guidance"]:
        feeds["guidance"] = np.full(1, 4.0, dtype=np.float32)
    return feeds


def compared_outputs(artifact: Artifact, outputs: dict[str, np.ndarray],
                     feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What is compared per output: noise_pred; for a step artifact the update latent_next - latent (with
    dt = 1, the velocity: the carried latent itself would hide the model's error under its own magnitude)."""
    if not artifact.is_step:
        return {"noise_pred": outputs["noise_pred"]}
    if not np.array_equal(outputs["step_next"], feeds["step"] + 1):
        raise InputError(f"the step artifact returned step_next {outputs['step_next'].tolist()} for step "
                         f"{feeds['step'].tolist()}: it is not a ptdit-export --step graph; re-export it")
    return {"latent_next - latent": outputs["latent_next"].astype(np.float64) - feeds["latent"]}


@dataclass
class DiffOptions:
    references: tuple[str, ...] = ("fp32",)  # "fp32" and/or "same" (the artifact's precision policy)
    backend: str = "auto"
    device: str = "auto"
    seed: int = 0
    steps: int = 10  # trajectory length; 0 skips it
    guidance: float = 4.0
    blocks: bool = True
    blocks_plan: Path | None = None
    thresholds: Thresholds | None = None
    verify: bool = True
    tensorrt: TensorRTOptions | None = None  # what a plan needs from the run (runtime cache, lean runtime, budget)


def open_artifact_session(path: Path, options: DiffOptions, extra_outputs: list[str]) -> Any:
    from .session import open_session, resolve_backend

    artifact = load_artifact(path, verify=options.verify)
    if extra_outputs and resolve_backend(artifact, options.backend) == "onnxruntime":
        from .backend_onnxruntime import OnnxRuntimeSession

        return OnnxRuntimeSession(artifact, options.device, extra_outputs=extra_outputs)
    return open_session(str(path), options.backend, options.device, verify=options.verify, tensorrt=options.tensorrt)


def reference_precision(artifact: Artifact, reference: str) -> str:
    return artifact.precision if reference == "same" else "fp32"


def run_diff(path: Path, options: DiffOptions, report: Reporter) -> dict[str, Any]:
    from .backend_torch import TorchSession

    artifact = load_artifact(path, verify=options.verify)
    if artifact.is_step and not artifact.export["step"]["guidance"] and options.guidance != 1.0:
        report(f"  unguided step artifact: the trajectory runs with cfg 1 (not {options.guidance:g})")
        options = replace(options, guidance=1.0)
    thresholds = options.thresholds or DEFAULT_THRESHOLDS[artifact.precision]
    block_names = list((artifact.manifest.get("block_outputs") or {}).get("names", []))
    check_config(artifact, block_names)
    feeds = diff_inputs(artifact, options.seed)

    # The artifact: one forward with the block tensors (where this artifact can give them), then the
    # trajectory on a plain session (marked block outputs would be copied out at every step).
    blocks_path, blocks_note = _blocks_source(artifact, options, block_names)
    got: dict[str, np.ndarray] = {}
    if blocks_path is not None:
        session = open_artifact_session(blocks_path, options, block_names if artifact.kind == "onnx" else [])
        session.set_inputs(feeds)
        got = session.run()
        session.close()
        if blocks_path != path:  # a diagnostic plan's fusions differ: the outputs come from the plan itself
            got = {name: got[name] for name in block_names}
    session = open_artifact_session(path, options, [])
    backend = session.backend
    report(f"ptdit-diff: {path.name} on {backend} against PyTorch ({', '.join(options.references)})")
    output_names = [t.name for t in artifact.outputs]
    if any(name not in got for name in output_names):
        session.set_inputs(feeds)
        got.update(session.run())
    got_outputs = compared_outputs(artifact, got, feeds)
    trajectory_latent = _trajectory(session, options) if options.steps else None
    session.close()

    result: dict[str, Any] = {
        "schema": REPORT_SCHEMA, "artifact": path.name, "backend": backend, "precision": artifact.precision,
        "seed": options.seed, "thresholds": asdict(thresholds), "references": {}, "blocks_note": blocks_note,
    }
    failures: list[str] = []
    for reference in dict.fromkeys(options.references):
        precision = reference_precision(artifact, reference)
        if reference == "same" and precision == "fp32" and "fp32" in options.references:
            continue  # an fp32 artifact's own precision is the fp32 reference
        report(f"  PyTorch reference in {precision} ...")
        torch_session = TorchSession(artifact, options.device, precision)
        torch_session.set_inputs(feeds)
        expected, torch_blocks = torch_session.run_with_blocks()
        entry: dict[str, Any] = {"precision": precision}
        expected_outputs = compared_outputs(artifact, expected, feeds)
        entry["outputs"] = {name: compare(value, expected_outputs[name], thresholds.rtol, thresholds.atol)
                            for name, value in got_outputs.items()}
        if blocks_path is not None:
            entry["blocks"] = [compare(got[name], torch_blocks[i], thresholds.rtol, thresholds.atol)
                               for i, name in enumerate(block_names)]
            entry["first_divergent_block"] = next(
                (i for i, m in enumerate(entry["blocks"]) if m["rel_l2"] > thresholds.max_rel_l2), None)
            entry["largest_jump_block"] = _largest_jump([m["rel_l2"] for m in entry["blocks"]])
        if trajectory_latent is not None:
            reference_latent = _trajectory(torch_session, options)
            entry["trajectory"] = {"steps": options.steps, "guidance": options.guidance,
                                   **compare(trajectory_latent, reference_latent, thresholds.rtol, thresholds.atol)}
        torch_session.close()
        failures += _failures(reference, entry, thresholds)
        result["references"][reference] = entry
    result["failures"] = failures
    result["passed"] = not failures
    return result


def check_config(artifact: Artifact, block_names: list[str]) -> None:
    """The manifest's model config must describe the graph it came with (depth and width of the blocks)."""
    config = artifact.manifest["model"]["config"]
    width = int(config["num_heads"]) * int(config["head_dim"])
    block_shape = (artifact.manifest.get("block_outputs") or {}).get("shape")
    if block_names and (len(block_names) != int(config["depth"]) or (block_shape and block_shape[-1] != width)):
        raise InputError(f"the manifest's model config (depth {config['depth']}, width {width}) does not match the "
                         f"artifact ({len(block_names)} blocks of width {block_shape[-1] if block_shape else '?'}): "
                         f"re-export it")


def _blocks_source(artifact: Artifact, options: DiffOptions, names: list[str]) -> tuple[Path | None, str | None]:
    """Where the per-block tensors come from: the ONNX itself (marked as outputs on the fly) or a plan built
    with --mark-blocks (given, or found next to the plan)."""
    if not options.blocks or not names:
        return None, "per-block comparison off" if not options.blocks else "the manifest lists no block tensors"
    if artifact.kind == "onnx":
        return artifact.path, None
    candidate = options.blocks_plan or artifact.path.with_name(artifact.path.stem + "-blocks.plan")
    if candidate.is_file():
        return candidate, None
    if options.blocks_plan is not None:
        raise InputError(f"--blocks-plan {candidate} does not exist")
    onnx_name = artifact.manifest["onnx"]["file"]
    return None, f"no diagnostic plan {candidate.name}: build one with ptdit-build {onnx_name} --mark-blocks"


def _trajectory(session: Any, options: DiffOptions) -> np.ndarray:
    text_spec = session.artifact.spec("text_embeds")
    text = make_conditioning(text_spec.shape[1], text_spec.shape[2], random_seed=options.seed)
    return make_sampler(session, options.steps, options.guidance, options.seed).sample(text).latent


def _largest_jump(errors: list[float]) -> int | None:
    if len(errors) < 2:
        return None
    ratios = [errors[i] / max(errors[i - 1], 1e-30) for i in range(1, len(errors))]
    return int(np.argmax(ratios)) + 1


def _failures(reference: str, entry: dict[str, Any], t: Thresholds) -> list[str]:
    failures = []
    for name, m in entry["outputs"].items():
        if m["rel_l2"] > t.max_rel_l2:
            failures.append(f"{name} vs {reference}: relative L2 {m['rel_l2']:.3g} > {t.max_rel_l2:g}")
        if not m["within_tolerance"]:
            failures.append(f"{name} vs {reference}: {m['outside_tolerance']:.3%} of the elements are outside "
                            f"atol {t.atol:g} + rtol {t.rtol:g} |ref| (max abs {m['max_abs']:.3g})")
    trajectory = entry.get("trajectory")
    if trajectory and trajectory["rel_l2"] > t.max_trajectory_rel_l2:
        failures.append(f"latent after {trajectory['steps']} steps vs {reference}: relative L2 "
                        f"{trajectory['rel_l2']:.3g} > {t.max_trajectory_rel_l2:g}")
    return failures


def table(result: dict[str, Any]) -> str:
    lines = [f"{result['artifact']} on {result['backend']} ({result['precision']})", "",
             "| reference | what | max abs | mean abs | rel L2 | cosine | outside tol |",
             "| --- | --- | --- | --- | --- | --- | --- |"]

    def row(reference: str, what: str, m: dict[str, Any]) -> str:
        return (f"| {reference} | {what} | {m['max_abs']:.3e} | {m['mean_abs']:.3e} | {m['rel_l2']:.3e} | "
                f"{m['cosine']:.6f} | {m['outside_tolerance']:.2%} |")

    for reference, entry in result["references"].items():
        label = f"torch {entry['precision']}"
        for name, m in entry["outputs"].items():
            lines.append(row(label, name, m))
        if "trajectory" in entry:
            lines.append(row(label, f"latent after {entry['trajectory']['steps']} steps", entry["trajectory"]))
        for i, m in enumerate(entry.get("blocks", [])):
            lines.append(row(label, f"block {i}", m))
        if "blocks" in entry:
            first = entry["first_divergent_block"]
            lines.append("")
            lines.append(f"vs {label}: first block over the rel L2 threshold: "
                         f"{'none' if first is None else first}; largest jump at block {entry['largest_jump_block']}")
    if result.get("blocks_note"):
        lines.append(f"blocks: {result['blocks_note']}")
    lines.append("")
    lines.append("PASSED" if result["passed"] else "FAILED: " + "; ".join(result["failures"]))
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> bool:
    """Relative L2 error per block (log scale), one line per reference. False when there are no blocks."""
    entries = {k: v for k, v in result["references"].items() if "blocks" in v}
    if not entries:
        return False
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
    return True
