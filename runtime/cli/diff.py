"""ptdit-diff: how far an artifact is from PyTorch, per output, per block and over a sampling run."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from ptdit.contract.cli_types import Console, command_options, declared_options
from ptdit.contract.commands import exit_codes

from ..diff.api import DIFF

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
@declared_options(DIFF)
@command_options(json_help="Print the report on stdout instead of the table.")
def main(artifact: Path, as_json: bool, debug: bool, console: Console, **values: Any) -> None:
    """Compare an artifact (.onnx via ONNX Runtime, .plan via TensorRT) with the PyTorch model it came from.

    Identical seeded inputs go through both; reported per output (max abs, mean abs, relative L2, cosine,
    share of elements outside atol/rtol), per transformer block (to find where error enters) and for the
    latent after a sampling run. Exit 1 when a threshold is exceeded.
    """
    from ..diff.api import diff_artifact
    from ..diff.report import pipeline_table, report_json, table

    with exit_codes("ptdit-diff", debug, flags=DIFF.flags()):
        result = diff_artifact(artifact, progress=console.line, counter=console.counter, **values)
    shown = report_json(result.report).rstrip("\n") if as_json else None
    click.echo(shown or (pipeline_table(result.report) if artifact.is_dir() else table(result.report)))
    if result.written:
        console.line(f"wrote {', '.join(str(p) for p in result.written)}")
    if not result.passed:
        sys.exit(1)
