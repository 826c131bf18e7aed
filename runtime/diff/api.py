"""ptdit-diff from Python: keyword options, a typed result, progress through a callback or `logging`.

    from runtime import diff_artifact

    result = diff_artifact("artifacts/ptdit-tiny-256-b2-fp16.onnx", steps=4)
    result.passed, result.report["references"]["fp32"]["outputs"], result.report_path, result.up_to_date

A report already there, measured on the same files with the same options, is reused (up_to_date); a stale one is
refused unless force=True. Errors are InputError naming these parameters.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ptdit.contract.arguments import checked
from ptdit.contract.cache import check_steps, parse_cache
from ptdit.contract.errors import InputError, option
from ptdit.contract.numbers import DEFAULT_GUIDANCE, GUIDANCE, SEED, STEPS, Range
from ptdit.contract.options import Option, Options
from ptdit.contract.outputs import Outputs
from ptdit.contract.progress import Counter, Reporter, no_counter
from ptdit.contract.reuse import Existing

from ..backends.tensorrt.flavour import TensorRTOptions
from ..run_options import DEVICES, SAMPLING, SESSION
from .metrics import GATE, TOLERANCE

COMPARED_STEPS = Range(0, STEPS.high, integer=True)  # 0: no sampling run
REFERENCES = ("fp32", "same", "both")
BACKENDS = ("auto", "tensorrt", "onnxruntime")
DEFAULT_PROMPT = "a red fox in the snow"
LOG = logging.getLogger("runtime")


@dataclass(frozen=True)
class DiffResult:
    report: dict[str, Any]  # the report, as written to report_path (.diff.json)
    report_path: Path
    plot_path: Path  # the per-block plot (.diff.png), where the diff has blocks
    up_to_date: bool  # a report already there was reused
    written: list[Path] = field(default_factory=list)  # what this call published (nothing when reused)

    @property
    def passed(self) -> bool:
        """Every gate held (thresholds of an artifact, the limits of a pipeline folder)."""
        return bool(self.report["passed"])


DIFF = Options(
    Option("reference", str, "fp32", "PyTorch fp32, PyTorch in the artifact's own precision policy, or both.",
           choices=REFERENCES, show_default=True),
    Option("backend", str, "auto", "What runs the artifact (auto: tensorrt for a .plan, onnxruntime for an .onnx).",
           choices=BACKENDS, show_default=True),
    Option("device", str, "auto", "For onnxruntime and the PyTorch reference.", choices=DEVICES, show_default=True),
    Option("seed", int, 0, "Seed of the inputs and of the sampling run.", accepted=SEED, show_default=True),
    Option("steps", int, 10, "Sampling steps compared (0: skip).", accepted=COMPARED_STEPS, show_default=True),
    Option("guidance", float, DEFAULT_GUIDANCE, "Classifier-free guidance scale of the sampling run.", flag="--cfg",
           accepted=GUIDANCE, show_default=True),
    Option("blocks", bool, True, "Skip the per-block comparison.", flag="--no-blocks"),
    Option("blocks_plan", str | Path | None, None, "For a plan: the ptdit-build --mark-blocks plan [default: "
           "<plan stem>-blocks.plan].", kind="file"),
    Option("prompt", str, DEFAULT_PROMPT, "For a pipeline folder: the prompt run through both pipelines.",
           show_default=True),
    Option("rtol", float | None, None, "Element-wise relative tolerance [default: per precision].",
           accepted=TOLERANCE),
    Option("atol", float | None, None, "Element-wise absolute tolerance [default: per precision].",
           accepted=TOLERANCE),
    Option("max_rel_l2", float | None, None, "Largest relative L2 error of an output.", accepted=GATE),
    Option("max_trajectory_rel_l2", float | None, None, "Largest relative L2 error of the latent after the sampling "
           "run.", accepted=GATE),
    Option("out_dir", str | Path | None, None, "Where the report and plot go [default: next to the artifact].",
           flag="--out", kind="folder"),
    Option("force", bool, False, "Overwrite an existing report and plot."),
) + SAMPLING.only("cache") + SESSION.without("backend", "device")  # as ptdit-run's: --cache, TensorRT, --no-verify


@checked(options=DIFF)
def diff_artifact(artifact: str | Path, *, progress: Reporter | None = None, counter: Counter | None = None,
                  **options: Any) -> DiffResult:
    """Compare an artifact (.onnx via ONNX Runtime, .plan via TensorRT) or a pipeline folder with the PyTorch model
    it came from, as ptdit-diff does: per output, per transformer block and over `steps` sampling steps (a folder:
    each component, then the image or clip by PSNR, on `prompt`). reference: fp32, same (the artifact's own
    precision policy) or both; the gates (rtol, atol, max_rel_l2, max_trajectory_rel_l2) default per precision.
    The report and plot go next to the artifact, or to out_dir. The keywords are ptdit-diff's options
    (runtime.diff.api.DIFF). progress: each line of progress (default: the `runtime` logger, at INFO); counter:
    the counted stages (ptdit.contract.progress.Counter)."""
    return _diff(Path(artifact), progress or LOG.info, counter or no_counter, **options)


def _diff(path: Path, report_line: Reporter, count: Counter, reference: str, backend: str, device: str, seed: int,
          steps: int, guidance: float, blocks: bool, blocks_plan: str | Path | None, prompt: str, rtol: float | None,
          atol: float | None, max_rel_l2: float | None, max_trajectory_rel_l2: float | None,
          out_dir: str | Path | None, force: bool, cache: str | None, verify: bool, **tensorrt_run: Any) -> DiffResult:
    from .artifact_diff import DiffOptions, run_diff
    from .identity import diff_identity, report_state, verify_identity
    from .metrics import DEFAULT_THRESHOLDS, Thresholds
    from .report import has_blocks, plot, report_json

    spec = parse_cache(cache)
    if spec is not None and steps == 0 and not path.is_dir():
        raise InputError(f"{option('cache', cache)} caches the sampling run, and {option('steps', 0)} skips it: pass "
                         f"{option('steps')} 2 or more")
    check_steps(spec, steps or 10)
    directory = Path(out_dir) if out_dir is not None else path.parent
    report_path, plot_path = directory / f"{path.stem}.diff.json", directory / f"{path.stem}.diff.png"
    tensorrt = TensorRTOptions.of(tensorrt_run)
    plan = Path(blocks_plan) if blocks_plan is not None else None
    if path.is_dir():
        given = [option(name) for name, value in (("rtol", rtol), ("atol", atol), ("max_rel_l2", max_rel_l2),
                                                  ("max_trajectory_rel_l2", max_trajectory_rel_l2),
                                                  ("blocks_plan", blocks_plan)) if value is not None]
        if reference != "fp32":
            given.append(option("reference"))
        if given:
            raise InputError(f"{', '.join(given)} apply to an .onnx or .plan; a pipeline folder is judged against the "
                             f"PyTorch fp32 pipeline by its own limits (docs/diff.md, \"Thresholds\"): drop them")
        options = DiffOptions(("fp32",), backend, device, seed, steps, guidance, blocks, None, None, verify, tensorrt,
                              cache)
    else:
        from ..artifact import load_artifact

        base = DEFAULT_THRESHOLDS[load_artifact(path, verify=False).manifest.precision]
        thresholds = Thresholds(
            rtol=base.rtol if rtol is None else rtol,
            atol=base.atol if atol is None else atol,
            max_rel_l2=base.max_rel_l2 if max_rel_l2 is None else max_rel_l2,
            max_trajectory_rel_l2=(base.max_trajectory_rel_l2 if max_trajectory_rel_l2 is None
                                   else max_trajectory_rel_l2),
        )
        references = ("fp32", "same") if reference == "both" else (reference,)
        options = DiffOptions(references, backend, device, seed, steps, guidance, blocks, plan, thresholds, verify,
                              tensorrt, cache)
    identity = diff_identity(path, options, prompt if path.is_dir() else None)
    existing = Existing[dict[str, Any]].absent() if force else report_state(report_path, plot_path, identity)
    existing.refuse_if_stale("measure again")
    if existing.state == "current":
        reused = existing.found
        assert reused is not None  # a current report is the one read
        if verify:
            verify_identity(path, identity)
        report_line(f"ptdit-diff: {report_path} is up to date (same files and options); it is reused")
        return DiffResult(reused, report_path, plot_path, up_to_date=True)
    with Outputs(force) as outputs:  # the report and the plot: published together once the diff has run
        staged_report, staged_plot = outputs.claim(report_path), outputs.claim(plot_path)
        if path.is_dir():
            from .pipeline_diff import run_pipeline_diff

            result = run_pipeline_diff(path, prompt, options, report_line, count)
        else:
            result = run_diff(path, options, report_line, count)
            if has_blocks(result):
                plot(result, staged_plot)
        result["identity"] = identity
        staged_report.write_text(report_json(result))
        written = outputs.commit()
    return DiffResult(result, report_path, plot_path, up_to_date=False, written=written)
