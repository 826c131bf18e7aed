"""ptdit-bench: complexity, export cost, runtime latency and overhead, and (with a CUDA device) GPU latency and
memory. Every number is measured in the run that prints it; ratios are taken within one run.

It lives in the export package because that is the stage allowed to import both the model and ONNX; the
runtime is measured through its own benchmark in a child process (stages talk through files, not imports).
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import click

from .build_bench import DEFAULT_CONFIGS

PAPER_RATIOS = {256: 0.343, 512: 0.097, 1024: 0.047, 2048: 0.023}  # Qihoo-T2X, attention cost vs full attention
RESOLUTIONS = (256, 512, 1024, 2048)
VIDEO = (512, 16)  # res, latent frames


def machine() -> dict[str, Any]:
    import os

    info: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "python": platform.python_version(),
                            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def write_json(path: Path | None, section: str, rows: Any) -> None:
    if path is None:
        return
    data = json.loads(path.read_text()) if path.exists() else {}
    data[section] = rows
    data["machine"] = machine()
    path.write_text(json.dumps(data, indent=2) + "\n")


# --- complexity --------------------------------------------------------------------------------------------

def complexity_rows(preset_name: str, onnx: bool, report: Callable[[str], None]) -> list[dict[str, Any]]:
    from ptdit import attention_cost_ratio, count_macs, preset

    cfg = preset(preset_name)
    shapes: list[tuple[int, int | None]] = [(r, None) for r in RESOLUTIONS] + [VIDEO]
    rows = []
    counted = graph_counts(cfg, shapes, report) if onnx else {}
    for res, frames in shapes:
        row: dict[str, Any] = {"res": res, "frames": frames, "analytic_ratio": attention_cost_ratio(res, frames),
                               "paper_ratio": PAPER_RATIOS.get(res) if frames is None else None}
        for attention in ("proxy", "full"):
            macs = count_macs(cfg.replace(attention=attention), res, frames, batch=2)
            row[attention] = {"linear": macs.linear, "attention": macs.attention}
            graph = counted.get((attention, res, frames))
            if graph is not None:
                row[attention]["onnx"] = graph
                row[attention]["agree"] = graph == {"linear": macs.linear, "attention": macs.attention}
        rows.append(row)
    return rows


def graph_counts(cfg: Any, shapes: list[tuple[int, int | None]], report: Callable[[str], None]) -> dict[Any, Any]:
    """Trace the real model (seeded weights; nothing written) at each shape and count its graph."""
    import gc

    from .exporter import build_model, clean, strip_block_outputs, trace
    from .graph_macs import graph_macs
    from .spec import ExportSpec

    counts = {}
    for attention in ("proxy", "full"):
        variant = cfg.replace(attention=attention)
        model, _ = build_model(variant, "fp16")
        names = set(model.state_dict())
        for res, frames in shapes:
            report(f"  counting the ONNX graph of {variant.name} ({attention} attention) at {res}"
                   + (f", {frames} frames" if frames else ""))
            spec = ExportSpec(variant.name, res, frames, 2, 200, "fp16", 18)
            outputs = spec.outputs(variant.out_channels, res // 8, variant.in_channels)
            graph = trace(model, spec, spec.inputs(variant.in_channels, variant.text_dim, res // 8), outputs)
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
        lines.append(f"| {shape} | {r['analytic_ratio'] * 100:.2f} %{paper} | {p_total / 1e9:,.1f} ({p['attention'] / 1e9:,.1f}) | "
                     f"{f_total / 1e9:,.1f} ({f['attention'] / 1e9:,.1f}) | {p_total / f_total:.3f} | "
                     f"{p['attention'] / f['attention']:.4f} | {agree} |")
    return "\n".join(lines)


# --- runtime -------------------------------------------------------------------------------------------------

def runtime_rows(artifacts: list[tuple[str, int, str]], latency_steps: int, report: Callable[[str], None],
                 overhead_steps: int = 10, overhead_rounds: int = 10, loops_backend: str = "onnxruntime",
                 loop_steps: int = 30) -> dict[str, Any]:
    """Export each (preset, res, precision) with its step graph to a temporary directory and run the runtime's
    benchmark on it: overhead and latency on the noise-prediction ONNX, and the host loop against the step loop
    on `loops_backend` (tensorrt: both graphs are built into plans first, with ptdit-build's default target)."""
    with tempfile.TemporaryDirectory(prefix="ptdit-bench-") as tmp:
        paths, loops = [], []
        for preset_name, res, precision in artifacts:
            report(f"  exporting {preset_name} at {res} ({precision}, with --step)")
            subprocess.run([sys.executable, "-m", "export", "--preset", preset_name, "--res", str(res), "--precision",
                            precision, "--out", tmp, "--skip-checks", "--step"], check=True, capture_output=True)
            noise = str(Path(tmp) / f"ptdit-{preset_name}-{res}-b2-{precision}.onnx")
            pair = [noise, noise.replace(".onnx", "-step.onnx")]
            if loops_backend == "tensorrt":
                report(f"  building both graphs of {preset_name} at {res} with ptdit-build")
                fp32 = ["--allow-fp32"] if precision == "fp32" else []
                pair = [json.loads(_run([sys.executable, "-m", "engines", p, "--json", *fp32]))["plan"] for p in pair]
            paths.append(noise)
            loops += ["--loops", *pair]
        out = Path(tmp) / "runtime.json"
        report("  timing the runtime (overhead, per-step latency per backend, host loop against step loop)")
        args = [sys.executable, "-m", "runtime.bench", *[a for p in paths for a in ("--artifact", p)], *loops,
                "--loops-backend", "auto" if loops_backend == "tensorrt" else loops_backend, "--loop-steps",
                str(loop_steps), "--latency", "onnxruntime", "--latency", "torch", "--latency-steps",
                str(latency_steps), "--steps", str(overhead_steps), "--rounds", str(overhead_rounds), "--json", str(out)]
        _run(args)
        return dict(json.loads(out.read_text()))


def _run(args: list[str]) -> str:
    """A child process's stdout; its stderr's end in the error when it fails."""
    result = subprocess.run(args, capture_output=True, text=True)
    if result.returncode:
        raise click.ClickException(f"{' '.join(args[1:4])} ... failed:\n{result.stderr.strip()[-2000:]}")
    return result.stdout


def runtime_table(data: dict[str, Any]) -> str:
    lines = ["| artifact | ONNX Runtime CPU ms/step | PyTorch CPU ms/step | PyTorch / ONNX Runtime | runtime overhead |",
             "| --- | --- | --- | --- | --- |"]
    overhead = {r["artifact"]: r["overhead_ratio"] for r in data["overhead"]}
    by_artifact: dict[str, dict[str, float]] = {}
    for r in data["latency"]:
        by_artifact.setdefault(r["artifact"], {})[r["backend"].split(" ")[0]] = r["ms_per_step"]
    for name, times in by_artifact.items():
        ort_ms, torch_ms = times.get("onnxruntime"), times.get("torch")
        ratio = f"{torch_ms / ort_ms:.2f}" if ort_ms and torch_ms else "n/a"
        lines.append(f"| {name} | {ort_ms} | {torch_ms} | {ratio} | {overhead.get(name, 0) * 100:+.2f} % |")
    if data.get("loops_table"):  # formatted by the runtime's benchmark (stages share files, not code)
        lines += ["", data["loops_table"]]
    return "\n".join(lines)


# --- GPU -----------------------------------------------------------------------------------------------------

def matmul_rate(torch: Any, size: int = 8192, repeats: int = 10) -> float:
    """Measured fp16 matmul throughput of this GPU, FLOP/s (best of `repeats`)."""
    a = torch.randn(size, size, device="cuda", dtype=torch.float16)
    b = torch.randn(size, size, device="cuda", dtype=torch.float16)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize()
        best = min(best, start.elapsed_time(end) / 1000)
    return 2 * size**3 / best


def time_cuda(torch: Any, fn: Callable[[], Any], warmup: int = 3, repeats: int = 10) -> float:
    """Median milliseconds of fn() on the GPU."""
    import statistics

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def gpu_rows(preset_name: str, resolutions: tuple[int, ...], compile_model: bool,
             report: Callable[[str], None]) -> dict[str, Any]:
    import torch

    from ptdit import PTDiT, preset

    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device (torch.cuda.is_available() is False)"}
    rate = matmul_rate(torch)
    report(f"  {torch.cuda.get_device_name(0)}: fp16 matmul {rate / 1e12:.0f} TFLOP/s measured")
    rows = []
    for attention in ("proxy", "full"):
        cfg = preset(preset_name).replace(attention=attention)
        rows += gpu_model_rows(torch, PTDiT(cfg).eval().half().cuda(), resolutions, rate, compile_model, report)
        torch.cuda.empty_cache()
    return {"device": torch.cuda.get_device_name(0), "matmul_tflops": round(rate / 1e12, 1), "rows": rows}


def gpu_model_rows(torch: Any, model: Any, resolutions: tuple[int, ...], rate: float, compile_model: bool,
                   report: Callable[[str], None]) -> list[dict[str, Any]]:
    from ptdit import count_macs

    cfg, rows = model.cfg, []
    for res in resolutions:
        side = res // 8
        gen = torch.Generator(device="cuda").manual_seed(0)
        args = (torch.randn(2, cfg.in_channels, side, side, device="cuda", generator=gen),
                torch.full((2,), 500.0, device="cuda"),
                torch.randn(2, 200, cfg.text_dim, device="cuda", generator=gen),
                torch.ones(2, 200, dtype=torch.int64, device="cuda"))
        report(f"  {cfg.attention} attention at {res}: eager")
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        with torch.no_grad():
            eager_ms = time_cuda(torch, lambda: model(*args))
        peak = torch.cuda.max_memory_allocated()
        macs = count_macs(cfg, res, batch=2).total
        floor_ms = 2 * macs / rate * 1000
        row: dict[str, Any] = {"attention": cfg.attention, "res": res, "eager_ms": round(eager_ms, 2),
                               "peak_memory_bytes": peak, "gmac": round(macs / 1e9, 1),
                               "floor_ms": round(floor_ms, 2), "eager_fraction_of_floor": round(floor_ms / eager_ms, 3)}
        if compile_model:
            report(f"  {cfg.attention} attention at {res}: torch.compile")
            compiled = torch.compile(model)
            with torch.no_grad():
                compiled_ms = time_cuda(torch, lambda: compiled(*args), warmup=3)
            row["compiled_ms"] = round(compiled_ms, 2)
            row["compiled_fraction_of_floor"] = round(floor_ms / compiled_ms, 3)
            torch._dynamo.reset()
        rows.append(row)
    return rows


def gpu_table(data: dict[str, Any]) -> str:
    if "skipped" in data:
        return f"GPU: skipped ({data['skipped']})"
    lines = [f"{data['device']}, fp16 matmul {data['matmul_tflops']} TFLOP/s measured",
             "| model | res | GMAC | floor ms | eager ms (of floor) | compiled ms (of floor) | peak memory GB |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in data["rows"]:
        compiled = f"{r['compiled_ms']} ({r['compiled_fraction_of_floor']:.0%})" if "compiled_ms" in r else "n/a"
        lines.append(f"| {'PT-DiT' if r['attention'] == 'proxy' else 'full-attention DiT'} | {r['res']} | {r['gmac']} | "
                     f"{r['floor_ms']} | {r['eager_ms']} ({r['eager_fraction_of_floor']:.0%}) | {compiled} | "
                     f"{r['peak_memory_bytes'] / 1e9:.2f} |")
    return "\n".join(lines)


# --- CLI -----------------------------------------------------------------------------------------------------

def report(line: str) -> None:
    click.echo(line, err=True)


@click.group(epilog="""\b
Examples:
  ptdit-bench complexity --json bench.json
  ptdit-bench export --res 256 --res 1024
  ptdit-bench build --res 256 --config '' --config '--opt-level 0'     (TensorRT-RTX, no GPU needed)
  ptdit-bench runtime
  ptdit-bench gpu --res 1024 --res 2048          (on a machine with a CUDA device)
  ptdit-bench all --json bench.json
""", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
def main() -> None:
    """Benchmarks of PT-DiT and of this toolkit; tables on stdout, --json to keep the numbers."""


JSON_OPTION = click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
                           help="Add the results to this JSON file.")


@main.command()
@click.option("--preset", "preset_name", default="xl", show_default=True)
@click.option("--onnx/--no-onnx", default=True, show_default=True, help="Also count from the traced ONNX graphs.")
@JSON_OPTION
def complexity(preset_name: str, onnx: bool, json_path: Path | None) -> None:
    """Multiply-adds of PT-DiT and of the full-attention DiT of the same size, from the model and from the
    ONNX graph, and the paper's analytic attention ratio."""
    rows = complexity_rows(preset_name, onnx, report)
    click.echo(complexity_table(rows))
    write_json(json_path, "complexity", rows)
    if any(r["proxy"].get("agree") is False or r["full"].get("agree") is False for r in rows):
        sys.exit(1)


@main.command("export")
@click.option("--preset", "preset_name", default="xl", show_default=True)
@click.option("--res", "resolutions", type=int, multiple=True, default=[256, 512, 1024], show_default=True)
@click.option("--precision", default="fp16", show_default=True)
@click.option("--checks", type=click.Choice(["none", "fast", "full"]), default="none", show_default=True,
              help="Also time ptdit-export's checks at this level.")
@JSON_OPTION
def export_cost(preset_name: str, resolutions: tuple[int, ...], precision: str, checks: str,
                json_path: Path | None) -> None:
    """Wall time and peak RSS of ptdit-export, one fresh process per resolution."""
    from .bench import TARGETS, run_export, table

    rows = []
    for res in resolutions:
        report(f"  ptdit-export --preset {preset_name} --res {res} --precision {precision}")
        with tempfile.TemporaryDirectory() as out:
            args = ["--preset", preset_name, "--res", str(res), "--precision", precision, "--out", out]
            measured = run_export(args + ["--checks", checks])
        rows.append({"preset": preset_name, "res": res, "precision": precision, "checks": checks, "measured": measured})
    click.echo(table(rows))
    click.echo(TARGETS)
    write_json(json_path, "export", rows)


@main.command("build")
@click.option("--preset", "preset_name", default="xl", show_default=True)
@click.option("--res", "resolutions", type=int, multiple=True, default=[256, 1024], show_default=True)
@click.option("--precision", default="fp16", show_default=True)
@click.option("--target", default="rtx", show_default=True, help="ptdit-build --target (rtx builds on a CPU).")
@click.option("--config", "configs", multiple=True, default=DEFAULT_CONFIGS, show_default=True,
              help="ptdit-build options of one measured build, quoted (repeat); '' = the defaults.")
@JSON_OPTION
def build_cost(preset_name: str, resolutions: tuple[int, ...], precision: str, target: str, configs: tuple[str, ...],
               json_path: Path | None) -> None:
    """Ahead-of-time build cost of ptdit-build: parse and build time, plan size and peak RSS, per builder
    configuration (one fresh process each)."""
    from .build_bench import TARGETS as BUILD_TARGETS
    from .build_bench import build_rows, build_table

    rows = build_rows(preset_name, resolutions, precision, target, configs, report)
    click.echo(build_table(rows))
    click.echo(BUILD_TARGETS)
    write_json(json_path, "build", rows)


@main.command()
@click.option("--artifact", "artifacts", multiple=True, default=["tiny:256:fp32", "tiny:1024:fp32"],
              show_default=True, help="preset:res:precision to export and time (xl:256:fp32 takes minutes).")
@click.option("--steps", type=int, default=3, show_default=True, help="Sampling steps timed per backend.")
@click.option("--overhead-steps", type=int, default=10, show_default=True)
@click.option("--overhead-rounds", type=int, default=10, show_default=True)
@click.option("--loops-backend", type=click.Choice(["onnxruntime", "torch", "tensorrt"]), default="onnxruntime",
              show_default=True, help="Where the host loop and the step loop are compared (tensorrt: plans, on a GPU).")
@click.option("--loop-steps", type=int, default=30, show_default=True, help="Steps per sampling run of that comparison.")
@JSON_OPTION
def runtime(artifacts: tuple[str, ...], steps: int, overhead_steps: int, overhead_rounds: int, loops_backend: str,
            loop_steps: int, json_path: Path | None) -> None:
    """Per-step latency of ONNX Runtime (CPU) and PyTorch (CPU) on the same artifact, the runtime's overhead
    around the backend call, and the host loop (noise-prediction graph) against the step loop (--step graph)
    with their host<->device counters."""
    specs = [(a.split(":")[0], int(a.split(":")[1]), a.split(":")[2]) for a in artifacts]
    data = runtime_rows(specs, steps, report, overhead_steps, overhead_rounds, loops_backend, loop_steps)
    click.echo(runtime_table(data))
    write_json(json_path, "runtime", data)


@main.command()
@click.option("--preset", "preset_name", default="xl", show_default=True)
@click.option("--res", "resolutions", type=int, multiple=True, default=[1024, 2048], show_default=True)
@click.option("--compile/--no-compile", "compile_model", default=True, show_default=True)
@JSON_OPTION
def gpu(preset_name: str, resolutions: tuple[int, ...], compile_model: bool, json_path: Path | None) -> None:
    """PyTorch fp16 latency and peak memory of PT-DiT and the full-attention DiT, eager and compiled, against
    the floor set by the GPU's measured matmul rate. Skipped without a CUDA device."""
    data = gpu_rows(preset_name, resolutions, compile_model, report)
    click.echo(gpu_table(data))
    write_json(json_path, "gpu", data)


@main.command("all")
@JSON_OPTION
@click.pass_context
def run_all(ctx: click.Context, json_path: Path | None) -> None:
    """complexity, export, runtime and gpu with their defaults."""
    for command in (complexity, export_cost, build_cost, runtime, gpu):
        click.echo(f"\n## {command.name}\n")
        ctx.invoke(command, json_path=json_path)
