"""ptdit-diff: how far an artifact is from PyTorch, per output, per block and over a sampling run."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ptdit.contract.cli_types import Console, Number, console_options, version_option
from ptdit.contract.commands import exit_codes
from ptdit.contract.numbers import GUIDANCE, SEED

from ..diff.api import BACKENDS, COMPARED_STEPS, DEFAULT_PROMPT, DEVICES, REFERENCES
from ..diff.metrics import GATE, TOLERANCE
from .options import tensorrt_options

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
@click.option("--reference", type=click.Choice(REFERENCES), default="fp32", show_default=True,
              help="PyTorch fp32, PyTorch in the artifact's own precision policy, or both.")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True,
              help="What runs the artifact (auto: tensorrt for a .plan, onnxruntime for an .onnx).")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
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
@click.option("--prompt", default=DEFAULT_PROMPT, show_default=True,
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
    from ..diff.api import diff_artifact
    from ..diff.report import pipeline_table, report_json, table

    with exit_codes("ptdit-diff", debug, flags={"guidance": "--cfg", "out_dir": "--out"}):
        result = diff_artifact(artifact, reference=reference, backend=backend, device=device, seed=seed, steps=steps,
                               guidance=guidance, blocks=not no_blocks, blocks_plan=blocks_plan, prompt=prompt,
                               rtol=rtol, atol=atol, max_rel_l2=max_rel_l2,
                               max_trajectory_rel_l2=max_trajectory_rel_l2, out_dir=out_dir, force=force,
                               verify=not no_verify, runtime_cache_dir=runtime_cache_dir, lean_runtime=lean_runtime,
                               weight_budget=weight_budget, progress=console.line, counter=console.counter)
    shown = report_json(result.report).rstrip("\n") if as_json else None
    click.echo(shown or (pipeline_table(result.report) if artifact.is_dir() else table(result.report)))
    if result.written:
        console.line(f"wrote {', '.join(str(p) for p in result.written)}")
    if not result.passed:
        sys.exit(1)
