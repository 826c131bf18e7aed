"""ptdit-cache: step caching's calibration (an artifact's change curve and the threshold that meets a quality
target, written next to it) and its measurement (speed and quality against the uncached run)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click

from ptdit.contract.cache import DEFAULT_TARGET_PSNR, parse_cache
from ptdit.contract.cli_types import Console, artifact_argument, command_options, declared_options
from ptdit.contract.commands import exit_codes
from ptdit.contract.errors import InputError, option
from ptdit.contract.numbers import Range
from ptdit.contract.options import Option, Options

from ..diff.report import report_json
from ..run_options import IMAGE_SIZE, SAMPLING, SESSION

EXAMPLES = """\b
Examples:
  ptdit-cache calibrate artifacts/ptdit-tiny-256-pipeline --prompts prompts.txt --target-psnr 30
      writes artifacts/ptdit-tiny-256-pipeline/cache.json: then ptdit-run ... --cache default
  ptdit-cache measure artifacts/ptdit-tiny-256-pipeline --method every:2 --method calibrated --steps 30
      the table: transformer calls, seconds per image, both against uncached, latent rel L2, PSNR, SSIM
  ptdit-cache measure artifacts/ptdit-tiny-256-b2-fp16.onnx --method every:3 --json
"""
DEFAULT_PROMPTS = ("a red fox in the snow", "a lighthouse at dusk", "a bowl of fruit on a table", "a city street")
TARGET = Range(0, 200, low_open=True)
SEEDS = Range(1, 64, integer=True)

QUALITY = SESSION.only("backend", "device") + SAMPLING.only("steps", "guidance") + IMAGE_SIZE.only("height",
                                                                                                   "width") + Options(
    Option("prompts", Path | None, None, "A pipeline folder: a text file of prompts, one per line [default: four "
           "generic prompts]; a transformer artifact draws from seeded Gaussian features.", kind="file"),
    Option("seeds", int, 2, "Seeds per prompt (0, 1, ...).", accepted=SEEDS, show_default=True),
)
CALIBRATE = QUALITY + Options(
    Option("target_psnr", float, DEFAULT_TARGET_PSNR, "The mean PSNR (dB) against the uncached run that the "
           "threshold must keep.", accepted=TARGET, show_default=True),
)
MEASURE = QUALITY + Options(
    Option("methods", str, None, "A cache to measure, as --cache takes it (repeat for several).", flag="--method",
           multiple=True, metavar="METHOD[:VALUE]", required=True),
)


@click.group(epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
def main() -> None:
    """Calibrate and measure training-free step caching (ptdit-run --cache)."""


def _open(artifact: Path, values: dict[str, Any]) -> Any:
    from ..diff.cache_quality import QualityRun
    from ..pipeline.ptdit_pipeline import PTDiTPipeline

    prompts = list(DEFAULT_PROMPTS)
    if values["prompts"] is not None:
        try:
            prompts = [line.strip() for line in Path(values["prompts"]).read_text().splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"{option('prompts')} {values['prompts']} is not a readable text file ({e})") from None
        if not prompts:
            raise InputError(f"{option('prompts')} {values['prompts']} holds no prompt: one per line")
    if values["steps"] < 2:
        raise InputError(f"{option('steps', values['steps'])}: caching skips steps between computed ones, so it "
                         f"is measured on 2 steps or more")
    height, width = values["height"], values["width"]
    if (height is None) != (width is None):
        raise InputError(f"pass {option('height')} and {option('width')} together (a size of the folder), or neither")
    opened = PTDiTPipeline.from_folder if artifact.is_dir() else PTDiTPipeline.from_artifact
    pipe = opened(artifact, values["backend"], values["device"])
    try:
        size, _ = pipe.size_for(height, width, False)  # a size the folder holds, or refused
        return QualityRun(pipe, prompts, values["seeds"], values["steps"], values["guidance"], size)
    except BaseException:
        pipe.close()
        raise


@main.command(epilog=EXAMPLES)
@artifact_argument("a pipeline folder, or an .onnx or .plan transformer (noise-prediction or step graph)")
@declared_options(CALIBRATE)
@command_options()
def calibrate(artifact: Path, as_json: bool, debug: bool, console: Console, **values: Any) -> None:
    """Measure ARTIFACT's change curve on uncached runs of the prompts x seeds, then the largest threshold whose
    mean PSNR against them meets --target-psnr; write both next to ARTIFACT (cache.json inside a pipeline folder,
    <stem>.cache.json beside a file), where --cache calibrated and --cache default find them."""
    from ..diff.cache_quality import CANDIDATE_THRESHOLDS, write_calibration
    from ..diff.cache_quality import calibrate as run_calibration

    with exit_codes("ptdit-cache", debug, flags=CALIBRATE.flags()):
        target = values.pop("target_psnr")
        run = _open(artifact, values)
        with run.pipe:
            calibration, rows = run_calibration(run, target, console.line)
            path = write_calibration(artifact, run, calibration)
    summary = {**calibration.to_dict(), "out": str(path), "measured": rows}
    if as_json:
        click.echo(report_json(summary).rstrip("\n"))
        return
    if rows:
        click.echo(table(rows))
    if calibration.threshold:
        met = (f"threshold {calibration.threshold:g} (mean PSNR {calibration.measured_psnr or 0:.1f} dB >= "
               f"{target:g} dB)")
    elif rows:
        met = f"threshold 0: no threshold tried kept {target:g} dB, so calibrated skips nothing"
    else:
        met = (f"threshold 0: at {values['steps']} steps no candidate threshold (up to {CANDIDATE_THRESHOLDS[-1]:g}) "
               f"skips a step, so calibrated skips nothing")
    click.echo(f"wrote {path}: {met}")


@main.command(epilog=EXAMPLES)
@artifact_argument("a pipeline folder, or an .onnx or .plan transformer (noise-prediction or step graph)")
@declared_options(MEASURE)
@command_options()
def measure(artifact: Path, as_json: bool, debug: bool, console: Console, **values: Any) -> None:
    """Draw the prompts x seeds uncached, then with each --method; print per method the transformer calls and the
    seconds per image (and their ratios to uncached, measured in this run), and against the uncached output the
    final latent's relative L2, the image's PSNR and SSIM (per frame for video). Writes nothing."""
    with exit_codes("ptdit-cache", debug, flags=MEASURE.flags()):
        methods = list(values.pop("methods"))
        for method in methods:
            parse_cache(method, "methods")
        run = _open(artifact, values)
        with run.pipe:
            for method in methods:  # a calibration the artifact lacks: refused before the first draw
                try:
                    run.pipe.caching.check(method, run.session.artifact, values["steps"])
                except InputError as e:
                    raise e.renamed({"cache": "methods"}) from None
            run.uncached(progress=console.line)
            rows = [run.row(None)] + [run.row(m, console.line) for m in methods]
    click.echo(report_json(rows).rstrip("\n") if as_json else table(rows))


def table(rows: list[dict[str, Any]]) -> str:
    def number(value: float | None, form: str) -> str:
        if value is None:
            return "-"
        return "inf" if math.isinf(value) else format(value, form)

    lines = [f"{'cache':<22} {'calls':>6} {'x calls':>8} {'sample s':>9} {'x sample':>9} {'total s':>8} "
             f"{'x total':>8} {'rel L2':>8} {'PSNR dB':>8} {'SSIM':>6}"]
    for r in rows:
        lines.append(f"{r['cache']:<22} {r['transformer_calls']:>6.1f} {r['calls_ratio']:>8.2f} "
                     f"{r['sample_seconds_per_image']:>9.3f} {r['sample_time_ratio']:>9.2f} "
                     f"{r['seconds_per_image']:>8.3f} {r['time_ratio']:>8.2f} {number(r['latent_rel_l2'], '.4f'):>8} "
                     f"{number(r['psnr_db'], '.1f'):>8} {number(r['ssim'], '.3f'):>6}")
    return "\n".join(lines)



if __name__ == "__main__":
    main()
