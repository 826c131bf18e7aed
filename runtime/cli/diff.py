"""ptdit-diff: how far an artifact is from PyTorch, per output, per block and over a sampling run."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ptdit.contract.cli_types import Console, Number, console_options, version_option
from ptdit.contract.commands import exit_codes
from ptdit.contract.errors import InputError
from ptdit.contract.numbers import GUIDANCE, SEED, STEPS, Range
from ptdit.contract.outputs import Outputs

from ..backends.tensorrt.flavour import TensorRTOptions
from ..diff.metrics import GATE, TOLERANCE
from .options import tensorrt_options

COMPARED_STEPS = Range(0, STEPS.high, integer=True)  # 0: no sampling run

EXAMPLES = """\b
Examples:
  ptdit-diff artifacts/ptdit-tiny-256-b2-fp16.onnx
      table on screen; report (.diff.json) and per-block plot (.diff.png) next to the artifact
  ptdit-diff artifacts/ptdit-xl-1024-b2-fp16-sm90-trt10.13.plan --reference both --steps 30
      (per block: also build ptdit-build <onnx> --mark-blocks, found next to the plan)
  ptdit-diff model.onnx --max-rel-l2 5e-3 --json > report.json     (exit 1 when a threshold is exceeded)
  ptdit-diff artifacts/ptdit-tiny-256-pipeline --prompt "a red fox"
      a pipeline folder: each component, then the image against the PyTorch fp32 pipeline (PSNR)
"""


@click.command(epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--reference", type=click.Choice(["fp32", "same", "both"]), default="fp32", show_default=True,
              help="PyTorch fp32, PyTorch in the artifact's own precision policy, or both.")
@click.option("--backend", type=click.Choice(["auto", "tensorrt", "onnxruntime"]), default="auto", show_default=True,
              help="What runs the artifact (auto: tensorrt for a .plan, onnxruntime for an .onnx).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="For onnxruntime and the PyTorch reference.")
@click.option("--seed", type=Number(SEED), default=0, show_default=True,
              help="Seed of the inputs and of the sampling run.")
@click.option("--steps", type=Number(COMPARED_STEPS), default=10, show_default=True,
              help="Sampling steps compared (0: skip).")
@click.option("--cfg", "guidance", type=Number(GUIDANCE), default=4.0, show_default=True,
              help="Classifier-free guidance scale of the sampling run.")
@click.option("--no-blocks", is_flag=True, help="Skip the per-block comparison.")
@click.option("--blocks-plan", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="For a plan: the ptdit-build --mark-blocks plan [default: <plan stem>-blocks.plan].")
@click.option("--prompt", default="a red fox in the snow", show_default=True,
              help="For a pipeline folder: the prompt run through both pipelines.")
@click.option("--rtol", type=Number(TOLERANCE), default=None,
              help="Element-wise relative tolerance [default: per precision].")
@click.option("--atol", type=Number(TOLERANCE), default=None,
              help="Element-wise absolute tolerance [default: per precision].")
@click.option("--max-rel-l2", type=Number(GATE), default=None, help="Largest relative L2 error of an output.")
@click.option("--max-trajectory-rel-l2", type=Number(GATE), default=None,
              help="Largest relative L2 error of the latent after the sampling run.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the report and plot go [default: next to the artifact].")
@click.option("--force", is_flag=True, help="Overwrite an existing report and plot.")
@tensorrt_options
@click.option("--no-verify", is_flag=True, help="Skip the sha256 check of the artifact against its manifest.")
@click.option("--json", "as_json", is_flag=True, help="Print the report on stdout instead of the table.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@console_options
@version_option
def main(artifact: Path, reference: str, backend: str, device: str, seed: int, steps: int, guidance: float,
         no_blocks: bool, blocks_plan: Path | None, prompt: str, rtol: float | None, atol: float | None,
         max_rel_l2: float | None, max_trajectory_rel_l2: float | None, out_dir: Path | None, force: bool,
         runtime_cache_dir: Path | None, lean_runtime: Path | None, weight_budget: int | None, no_verify: bool,
         as_json: bool, debug: bool, console: Console) -> None:
    """Compare an artifact (.onnx via ONNX Runtime, .plan via TensorRT) with the PyTorch model it came from.

    Identical seeded inputs go through both; reported per output (max abs, mean abs, relative L2, cosine,
    share of elements outside atol/rtol), per transformer block (to find where error enters) and for the
    latent after a sampling run. Exit 1 when a threshold is exceeded.
    """
    from ..diff.artifact_diff import DiffOptions, run_diff
    from ..diff.identity import diff_identity, report_state, verify_identity
    from ..diff.metrics import DEFAULT_THRESHOLDS, Thresholds
    from ..diff.report import has_blocks, pipeline_table, plot, report_json, table

    with exit_codes("ptdit-diff", debug, flags={"guidance": "--cfg", "out_dir": "--out"}):
        directory = out_dir or artifact.parent
        report_path = directory / f"{artifact.stem}.diff.json"
        plot_path = directory / f"{artifact.stem}.diff.png"
        tensorrt = TensorRTOptions(runtime_cache_dir, lean_runtime, weight_budget)
        if artifact.is_dir():
            given = [name for name, value in (("--rtol", rtol), ("--atol", atol), ("--max-rel-l2", max_rel_l2),
                                              ("--max-trajectory-rel-l2", max_trajectory_rel_l2),
                                              ("--blocks-plan", blocks_plan)) if value is not None]
            if reference != "fp32":
                given.append("--reference")
            if given:
                raise InputError(f"{', '.join(given)} apply to an .onnx or .plan; a pipeline folder is judged "
                                 f"against the PyTorch fp32 pipeline by its own limits (README, \"Accuracy "
                                 f"diff\"): drop them")
            options = DiffOptions(("fp32",), backend, device, seed, steps, guidance, not no_blocks, None, None,
                                  not no_verify, tensorrt)
        else:
            from ..artifact import load_artifact

            manifest = load_artifact(artifact, verify=False).manifest
            base = DEFAULT_THRESHOLDS[manifest.precision]
            thresholds = Thresholds(
                rtol=base.rtol if rtol is None else rtol,
                atol=base.atol if atol is None else atol,
                max_rel_l2=base.max_rel_l2 if max_rel_l2 is None else max_rel_l2,
                max_trajectory_rel_l2=(base.max_trajectory_rel_l2 if max_trajectory_rel_l2 is None
                                       else max_trajectory_rel_l2),
            )
            references = ("fp32", "same") if reference == "both" else (reference,)
            options = DiffOptions(references, backend, device, seed, steps, guidance, not no_blocks, blocks_plan,
                                  thresholds, not no_verify, tensorrt)
        identity = diff_identity(artifact, options, prompt if artifact.is_dir() else None)
        state = None if force else report_state(report_path, plot_path, identity)
        if state is not None and state[1] is None:
            raise InputError(f"{state[0]}: it is stale and is not reused; pass --force to measure again")
        if state is not None:
            if not no_verify:
                verify_identity(artifact, identity)
            result, written = state[1], []
            console.line(f"ptdit-diff: {report_path} is up to date (same files and options); it is reused")
        else:
            with Outputs(force) as outputs:  # the report and the plot: published together once the diff has run
                staged_report, staged_plot = outputs.claim(report_path), outputs.claim(plot_path)
                if artifact.is_dir():
                    from ..diff.pipeline_diff import run_pipeline_diff

                    result = run_pipeline_diff(artifact, prompt, options, console.line, console.counter)
                else:
                    result = run_diff(artifact, options, console.line, console.counter)
                    if has_blocks(result):
                        plot(result, staged_plot)
                result["identity"] = identity
                staged_report.write_text(report_json(result))
                written = outputs.commit()
    assert result is not None
    if artifact.is_dir():
        click.echo(report_json(result).rstrip("\n") if as_json else pipeline_table(result))
    else:
        click.echo(report_json(result).rstrip("\n") if as_json else table(result))
    if written:
        console.line(f"wrote {', '.join(str(p) for p in written)}")
    if not result["passed"]:
        sys.exit(1)
