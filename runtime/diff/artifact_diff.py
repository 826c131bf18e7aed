"""The accuracy diff of an artifact: the same seeded inputs through the PyTorch reference and through the
artifact, compared per output, per transformer block, and over a whole sampling trajectory (metrics.py)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ptdit.contract.errors import InputError, option
from ptdit.contract.graph_check import FIX
from ptdit.contract.progress import Counter, Reporter, no_counter

from ..artifact import Artifact, load_artifact
from ..backends.interface import Session, StepLoop
from ..backends.tensorrt.flavour import TensorRTOptions
from ..sampling.caching import CacheSettings
from ..sampling.schedule import initial_noise
from ..sampling.step_sampler import make_sampler
from ..sampling.text import make_conditioning
from .metrics import DEFAULT_THRESHOLDS, Thresholds, diff_metrics, within

REPORT_SCHEMA = "ptdit-diff/1"
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
    if artifact.export.step and artifact.export.step.guidance:
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
    cache: str | None = None  # step caching of the artifact's sampling run (the references run uncached)


def open_artifact_session(path: Path, options: DiffOptions, extra_outputs: list[str]) -> Session:
    """The artifact's session; an ONNX with `extra_outputs` marked as outputs of a temporary copy."""
    from ..session import open_session, resolve_backend

    artifact = load_artifact(path, verify=options.verify)
    if extra_outputs and resolve_backend(artifact, options.backend, options.tensorrt) == "onnxruntime":
        from ..backends.onnxruntime_session import OnnxRuntimeSession

        return OnnxRuntimeSession(artifact, options.device, extra_outputs=extra_outputs)
    device = "auto" if artifact.kind == "plan" else options.device  # --device also places the PyTorch reference
    return open_session(str(path), options.backend, device, verify=options.verify, tensorrt=options.tensorrt)


def reference_precision(artifact: Artifact, reference: str) -> str:
    return artifact.precision if reference == "same" else "fp32"


def run_diff(path: Path, options: DiffOptions, report: Reporter, counter: Counter = no_counter) -> dict[str, Any]:
    from ..backends.torch_session import TorchSession

    artifact = load_artifact(path, verify=options.verify)
    if options.blocks_plan is not None and (artifact.kind != "plan" or not options.blocks):
        raise InputError(f"a blocks plan ({option('blocks_plan')}) is for the per-block comparison of a plan artifact; "
                         f"{artifact.path.name} {'is not a plan' if artifact.kind != 'plan' else 'has it turned off'}"
                         f": drop it")
    if artifact.export.step and not artifact.export.step.guidance and options.guidance != 1.0:
        report(f"  unguided step artifact: the trajectory runs with cfg 1 (not {options.guidance:g})")
        options = replace(options, guidance=1.0)
    thresholds = options.thresholds or DEFAULT_THRESHOLDS[artifact.precision]
    block_names = list(artifact.block_outputs.names)
    check_config(artifact, block_names)
    feeds = diff_inputs(artifact, options.seed)

    # The artifact: one forward with the block tensors (where this artifact can give them), then the
    # trajectory on a plain session (marked block outputs would be copied out at every step).
    blocks_path, blocks_note = _blocks_source(artifact, options, block_names)
    got: dict[str, np.ndarray] = {}
    if blocks_path is not None:
        with open_artifact_session(blocks_path, options, block_names if artifact.kind == "onnx" else []) as session:
            session.set_inputs(feeds)
            got = session.run()
        if blocks_path != path:  # a diagnostic plan's fusions differ: the outputs come from the plan itself
            got = {name: got[name] for name in block_names}
    with open_artifact_session(path, options, []) as session:
        backend = session.backend
        report(f"ptdit-diff: {path.name} on {backend} against PyTorch ({', '.join(options.references)})")
        output_names = [t.name for t in artifact.outputs]
        if any(name not in got for name in output_names):
            session.set_inputs(feeds)
            got.update(session.run())
        got_outputs = compared_outputs(artifact, got, feeds)
        recorder = PassRecorder(session)
        trajectory_latent = (_trajectory(recorder, options, counter, "artifact", options.cache) if options.steps
                             else None)

    result: dict[str, Any] = {
        "schema": REPORT_SCHEMA, "artifact": path.name, "backend": backend, "precision": artifact.precision,
        "seed": options.seed, "thresholds": asdict(thresholds), "references": {}, "blocks_note": blocks_note,
        "cache": options.cache or "off",
    }
    failures: list[str] = []
    for reference in dict.fromkeys(options.references):
        precision = reference_precision(artifact, reference)
        if reference == "same" and precision == "fp32" and "fp32" in options.references:
            continue  # an fp32 artifact's own precision is the fp32 reference
        report(f"  PyTorch reference in {precision} ...")
        with TorchSession(artifact, options.device, precision) as torch_session:
            torch_session.set_inputs(feeds)
            expected, torch_blocks = torch_session.run_with_blocks()
            entry: dict[str, Any] = {"precision": precision}
            expected_outputs = compared_outputs(artifact, expected, feeds)
            entry["outputs"] = {name: diff_metrics(value, expected_outputs[name], thresholds.rtol, thresholds.atol)
                                for name, value in got_outputs.items()}
            if blocks_path is not None:
                entry["blocks"] = [diff_metrics(got[name], torch_blocks[i], thresholds.rtol, thresholds.atol)
                                   for i, name in enumerate(block_names)]
                entry["first_divergent_block"] = next(
                    (i for i, m in enumerate(entry["blocks"]) if m["rel_l2"] > thresholds.max_rel_l2), None)
                entry["largest_jump_block"] = _largest_jump([m["rel_l2"] for m in entry["blocks"]])
            if trajectory_latent is not None:
                reference_latent = _trajectory(torch_session, options, counter, f"PyTorch {precision}")
                entry["trajectory"] = {"steps": options.steps, "guidance": options.guidance,
                                       **diff_metrics(trajectory_latent, reference_latent, thresholds.rtol,
                                                      thresholds.atol)}
                if recorder.passes and options.cache is None:  # a cached run skips steps: no step has its pass
                    entry["trajectory"]["noise_pred_rel_l2_per_step"] = _per_step(
                        torch_session, recorder.passes, options.steps, counter, f"PyTorch {precision}")
        failures += _failures(reference, entry, thresholds)
        result["references"][reference] = entry
    result["failures"] = failures
    result["passed"] = not failures
    return result


def check_config(artifact: Artifact, block_names: list[str]) -> None:
    """The manifest's model config must describe the graph it came with (depth and width of the blocks)."""
    config = artifact.model.config
    width = int(config["num_heads"]) * int(config["head_dim"])
    block_shape = artifact.block_outputs.shape
    if block_names and (len(block_names) != int(config["depth"]) or (block_shape and block_shape[-1] != width)):
        raise InputError(f"{artifact.path.name} is not the graph its manifest describes (the manifest's model "
                         f"config has depth {config['depth']}, width {width}; the graph {len(block_names)} blocks of "
                         f"width {block_shape[-1] if block_shape else '?'}): {FIX}")


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
        raise InputError(f"{option('blocks_plan')} {candidate} does not exist")
    onnx_name = artifact.plan.onnx.file
    return None, f"no diagnostic plan {candidate.name}: build one with ptdit-build {onnx_name} --mark-blocks"


def _trajectory(session: Session, options: DiffOptions, counter: Counter, label: str,
                cache: str | None = None) -> np.ndarray:
    text_spec = session.artifact.spec("text_embeds")
    text = make_conditioning(text_spec.shape[1], text_spec.shape[2], random_seed=options.seed)
    with counter(f"trajectory ({label})", options.steps, "step") as advance:
        caching = CacheSettings(session.artifact.path).sampler_args(cache, session.artifact)
        sampler = make_sampler(session, options.steps, options.guidance, options.seed, **caching)
        return sampler.sample(text, on_step=lambda i, t, timing: advance(f"t={t:7.2f}")).latent


class PassRecorder(Session):
    """The artifact's session as the sampler drives it, keeping every forward pass's inputs and noise_pred, so
    that the reference can be run on exactly the inputs the artifact saw at each step (a step graph keeps its
    state on the device and records nothing)."""

    def __init__(self, session: Session):
        self.session, self.backend, self.artifact = session, session.backend, session.artifact
        self.transfers = session.transfers  # set once in each backend's __init__, counted in place
        self.feeds: dict[str, np.ndarray] = {}
        self.passes: list[tuple[dict[str, np.ndarray], np.ndarray]] = []

    def set_inputs(self, feeds: Mapping[str, Any]) -> None:
        self.session.set_inputs(feeds)
        self.feeds.update({name: np.array(value, copy=True) for name, value in feeds.items()})

    def run(self) -> dict[str, np.ndarray]:
        outputs = self.session.run()
        if "noise_pred" in outputs:
            self.passes.append((dict(self.feeds), outputs["noise_pred"].copy()))
        return outputs

    def step_loop(self, carry: Mapping[str, str]) -> StepLoop:
        return self.session.step_loop(carry)

    def close(self) -> None:
        self.session.close()


def _per_step(reference: Session, passes: list[tuple[dict[str, np.ndarray], np.ndarray]], steps: int,
              counter: Counter, label: str) -> list[float]:
    """Relative L2 of the artifact's noise_pred against the reference's on the same inputs, per sampling step
    (the error each step adds, apart from the drift of the trajectory); a step of several passes is one vector."""
    per = len(passes) // steps
    errors = []
    with counter(f"per-step noise_pred ({label})", steps, "step") as advance:
        for i in range(steps):
            got, want = [], []
            for feeds, pred in passes[i * per:(i + 1) * per]:
                reference.set_inputs(feeds)
                want.append(reference.run()["noise_pred"].astype(np.float64))
                got.append(pred.astype(np.float64))
            diff, ref = np.concatenate(got) - np.concatenate(want), np.concatenate(want)
            errors.append(float(np.linalg.norm(diff) / max(float(np.linalg.norm(ref)), 1e-30)))
            advance(f"{errors[-1]:.2e}")
    return errors


def _largest_jump(errors: list[float]) -> int | None:
    if len(errors) < 2:
        return None
    ratios = [errors[i] / max(errors[i - 1], 1e-30) for i in range(1, len(errors))]
    return int(np.argmax(ratios)) + 1


def _failures(reference: str, entry: dict[str, Any], t: Thresholds) -> list[str]:
    failures = []
    for name, m in entry["outputs"].items():
        if not within(m["rel_l2"], t.max_rel_l2):
            failures.append(f"{name} vs {reference}: relative L2 {m['rel_l2']:.3g} > {t.max_rel_l2:g}")
        if not m["within_tolerance"] or not within(m["max_abs"], float("inf")):  # NaN is never within tolerance
            failures.append(f"{name} vs {reference}: {m['outside_tolerance']:.3%} of the elements are outside "
                            f"atol {t.atol:g} + rtol {t.rtol:g} |ref| (max abs {m['max_abs']:.3g})")
    trajectory = entry.get("trajectory")
    if trajectory and not within(trajectory["rel_l2"], t.max_trajectory_rel_l2):
        failures.append(f"latent after {trajectory['steps']} steps vs {reference}: relative L2 "
                        f"{trajectory['rel_l2']:.3g} > {t.max_trajectory_rel_l2:g}")
    return failures
