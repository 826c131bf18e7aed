"""Runtime overhead: a sampler step through our ONNX Runtime session (input checks and binding, the run,
copying the prediction out, guidance and the Euler update) against the bare backend call, measured in
one run on the same session: run_with_iobinding with every input already bound and the output left in
ONNX Runtime's buffer, i.e. the least work one model call can be.

    python -m runtime.bench artifacts/ptdit-tiny-256-b2-fp16.onnx --steps 30

With --loops NOISE STEP (a noise-prediction artifact and the step artifact exported next to it): the host loop
on the first against the device-resident step loop on the second, alternated on the same machine, with the
host<->device counters of each loop.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from ptdit.contract.cli_types import JsonFlagCommand, Number, declared_options, version_option
from ptdit.contract.commands import exit_codes
from ptdit.contract.errors import InputError
from ptdit.contract.numbers import ROUNDS, STEPS

from .backends.tensorrt.flavour import TensorRTOptions
from .run_options import TENSORRT_RUN

TARGET_OVERHEAD = 0.02


def measure_overhead(artifact_path: Path, steps: int = 10, rounds: int = 4, device: str = "cpu") -> dict[str, Any]:
    """Alternates blocks of `steps` bare calls with sampling runs of `steps` steps, `rounds` times each, so
    that both see the same machine state; compares the medians."""
    from .backends.onnxruntime_session import OnnxRuntimeSession
    from .sampling.host_loop import Sampler
    from .sampling.text import make_conditioning
    from .session import open_session

    with open_session(str(artifact_path), "onnxruntime", device) as session:
        assert isinstance(session, OnnxRuntimeSession)
        text_spec = session.artifact.spec("text_embeds")
        text = make_conditioning(text_spec.shape[1], text_spec.shape[2], random_seed=0)
        latent_spec = session.artifact.spec("latent")
        rng = np.random.default_rng(0)
        session.set_inputs({"latent": rng.standard_normal(latent_spec.shape, dtype=np.float32),
                            "timestep": np.full(latent_spec.shape[0], 500.0, dtype=np.float32),
                            "text_embeds": text.embeds, "text_mask": text.mask})
        session.run()  # binds the outputs

        def bare_block() -> list[float]:
            times = []
            for _ in range(steps):
                start = time.perf_counter()
                session.bare_call()
                times.append(time.perf_counter() - start)
            return times

        def sampler_block() -> list[float]:  # one sampling run of `steps` steps, as a user runs it
            return [step.total_s for step in sampler.sample(text).steps]

        sampler = Sampler(session, steps=steps, guidance=4.0, seed=0)
        bare_block(), sampler_block()  # warm-up
        bare_s: list[float] = []
        step_s: list[float] = []
        for r in range(rounds):  # alternate the order of the blocks: no order bias
            blocks = (bare_block, sampler_block) if r % 2 == 0 else (sampler_block, bare_block)
            for block in blocks:
                (bare_s if block is bare_block else step_s).extend(block())
        backend = session.backend
    bare_median, step_median = statistics.median(bare_s), statistics.median(step_s)

    def spread(values: list[float]) -> list[float]:  # p10, p90 in ms: the machine's noise, next to the medians
        return [round(float(v) * 1000, 3) for v in np.percentile(values, [10, 90])]

    return {
        "artifact": artifact_path.name,
        "backend": backend,
        "calls": len(step_s),
        "bare_run_ms": round(bare_median * 1000, 3),
        "sampler_step_ms": round(step_median * 1000, 3),
        "bare_run_p10_p90_ms": spread(bare_s),
        "sampler_step_p10_p90_ms": spread(step_s),
        "overhead_ratio": round(step_median / bare_median - 1, 4),
    }


def measure_latency(artifact_path: Path, backend: str, steps: int = 5, device: str = "cpu",
                    tensorrt: TensorRTOptions | None = None) -> dict[str, Any]:
    """Per-step latency of a sampling run (after one warm-up step) on one backend."""
    from .sampling.host_loop import Sampler
    from .sampling.text import make_conditioning
    from .session import open_session

    on = "auto" if backend == "tensorrt" else device  # a plan runs on the GPU: the device is for the others
    with open_session(str(artifact_path), backend, on, tensorrt=tensorrt) as session:
        text_spec = session.artifact.spec("text_embeds")
        text = make_conditioning(text_spec.shape[1], text_spec.shape[2], random_seed=0)
        Sampler(session, steps=1).sample(text)  # warm-up
        timings = [s.total_s for s in Sampler(session, steps=steps).sample(text).steps]
        name = session.backend
    return {"artifact": artifact_path.name, "backend": name, "steps": steps,
            "ms_per_step": round(statistics.median(timings) * 1000, 2)}


def measure_loops(noise_path: Path, step_path: Path, backend: str = "auto", steps: int = 10, rounds: int = 3,
                  device: str = "auto", tensorrt: TensorRTOptions | None = None) -> dict[str, Any]:
    """Per-step time (wall time of a sampling run / steps, medians over `rounds` alternated runs) and the
    counters of the host loop (noise-prediction artifact) and of the step loop (step artifact)."""
    from .sampling.step_sampler import make_sampler
    from .sampling.text import make_conditioning
    from .session import open_session

    with contextlib.ExitStack() as stack:
        sessions = [stack.enter_context(open_session(str(p), backend, device, tensorrt=tensorrt))
                    for p in (noise_path, step_path)]
        if sessions[0].artifact.is_step or not sessions[1].artifact.is_step:
            raise InputError(f"--loops takes a noise-prediction artifact and then a step artifact, got "
                             f"{noise_path.name} and {step_path.name}")
        text_spec = sessions[0].artifact.spec("text_embeds")
        text = make_conditioning(text_spec.shape[1], text_spec.shape[2], random_seed=0)
        samplers = [make_sampler(s, steps=steps, guidance=4.0, seed=0) for s in sessions]
        for sampler in samplers:
            make_sampler(sampler.session, steps=2).sample(text)  # warm-up (and graph capture on TensorRT)
        per_step: list[list[float]] = [[], []]
        results: list[Any] = [None, None]
        for r in range(rounds):
            for k in ((0, 1) if r % 2 == 0 else (1, 0)):
                results[k] = samplers[k].sample(text)
                per_step[k].append(results[k].seconds / steps)
        backends = [s.backend for s in sessions]
    host_ms, step_ms = (statistics.median(v) * 1000 for v in per_step)
    diff = results[0].latent.astype(np.float64) - results[1].latent
    return {
        "noise_artifact": noise_path.name, "step_artifact": step_path.name, "backend": backends[1], "steps": steps,
        "host_loop_ms_per_step": round(host_ms, 3), "step_loop_ms_per_step": round(step_ms, 3),
        "step_over_host": round(step_ms / host_ms, 4),
        "latent_rel_l2": float(np.linalg.norm(diff) / max(float(np.linalg.norm(results[0].latent)), 1e-30)),
        "host_loop_transfers": results[0].transfers(), "step_loop_transfers": results[1].transfers(),
        "host_backend": backends[0],
    }


def loops_table(rows: list[dict[str, Any]]) -> str:
    def per_step(t: dict[str, Any]) -> str:
        after = t["per_step_after_first_max"]
        return f"{after['to_device_bytes'] + after['from_device_bytes']:,} B, {after['syncs']} syncs"

    lines = ["| step artifact | backend | host loop ms/step | step loop ms/step | step / host | host loop per step "
             "| step loop per step (after the first) | step loop: final copy | latent rel L2 |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        final = r["step_loop_transfers"]["finish"]
        lines.append(f"| {r['step_artifact']} | {r['backend']} | {r['host_loop_ms_per_step']:.2f} | "
                     f"{r['step_loop_ms_per_step']:.2f} | {r['step_over_host']:.3f} | "
                     f"{per_step(r['host_loop_transfers'])} | {per_step(r['step_loop_transfers'])} | "
                     f"{final['from_device_bytes']:,} B, {final['syncs']} syncs | "
                     f"{r['latent_rel_l2']:.1e} |")
    return "\n".join(lines)


@click.command(cls=JsonFlagCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("artifacts", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--artifact", "artifact_options", type=click.Path(exists=True, path_type=Path), multiple=True,
              help="Deprecated spelling of the ARTIFACTS arguments.")
@click.option("--loops", "loop_pairs",
              type=(click.Path(exists=True, path_type=Path), click.Path(exists=True, path_type=Path)),
              multiple=True, metavar="NOISE STEP", help="Host loop on NOISE against the step loop on STEP.")
@click.option("--loops-backend", type=click.Choice(["auto", "onnxruntime", "torch", "tensorrt"]), default="auto",
              show_default=True, help="What runs the --loops comparison (auto: by the artifacts' kind).")
@click.option("--loop-steps", type=Number(STEPS), default=30, show_default=True,
              help="Steps per sampling run of --loops.")
@click.option("--steps", type=Number(STEPS), default=10, show_default=True,
              help="Steps per sampling run (and per bare block).")
@click.option("--rounds", type=Number(ROUNDS), default=10, show_default=True,
              help="Sampling runs and bare blocks, alternated.")
@click.option("--latency", "latency_backends", multiple=True, type=click.Choice(["onnxruntime", "torch", "tensorrt"]),
              help="Also time sampling steps on these backends (same artifact and inputs).")
@click.option("--latency-steps", type=Number(STEPS), default=5, show_default=True,
              help="Sampling steps timed per --latency backend.")
@declared_options(TENSORRT_RUN)
@click.option("--json", "as_json", is_flag=True, help="Print the measurements as JSON on stdout instead of the tables.")
@version_option
def main(artifacts: tuple[Path, ...], artifact_options: tuple[Path, ...], loop_pairs: tuple[tuple[Path, Path], ...],
         loops_backend: str, loop_steps: int,
         steps: int,
         rounds: int, latency_backends: tuple[str, ...], latency_steps: int, runtime_cache_dir: Path | None,
         lean_runtime: Path | None, weight_budget: int | None, as_json: bool) -> None:
    """Per-step overhead of the runtime around the backend call (ONNX Runtime, CPU, for .onnx artifacts),
    optionally the per-step latency of each backend (a .plan with --latency tensorrt), and the host loop
    against the step loop with their host<->device counters (--loops)."""
    with exit_codes("python -m runtime.bench", debug=False, writes=False):
        if artifact_options:
            click.echo("note: --artifact is deprecated; pass the artifacts as arguments", err=True)
            artifacts = artifacts + artifact_options
        if not artifacts and not loop_pairs:
            raise InputError("nothing to measure: pass ARTIFACTS and/or --loops NOISE STEP")
        rows = [measure_overhead(a, steps, rounds) for a in artifacts if a.suffix == ".onnx"]
        plan_options = TensorRTOptions(runtime_cache_dir, lean_runtime, weight_budget)
        latency = [measure_latency(a, b, latency_steps, tensorrt=plan_options if b == "tensorrt" else None)
                   for a in artifacts for b in latency_backends]
        loops = [measure_loops(noise, step, loops_backend, loop_steps, max(rounds // 3, 1), tensorrt=plan_options)
                 for noise, step in loop_pairs]
    if as_json:
        report = {"overhead": rows, "latency": latency, "loops": loops,
                  "loops_table": loops_table(loops) if loops else None}
        click.echo(json.dumps(report, indent=2))
        return
    if rows:
        click.echo("| artifact | backend | calls | bare call ms, median (p10-p90) | sampler step ms, median (p10-p90) "
                   "| overhead |")
        click.echo("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        b, s = r["bare_run_p10_p90_ms"], r["sampler_step_p10_p90_ms"]
        click.echo(f"| {r['artifact']} | {r['backend']} | {r['calls']} | "
                   f"{r['bare_run_ms']:.2f} ({b[0]:.2f}-{b[1]:.2f}) | "
                   f"{r['sampler_step_ms']:.2f} ({s[0]:.2f}-{s[1]:.2f}) | {r['overhead_ratio'] * 100:+.2f} % |")
    if rows:
        click.echo(f"target: overhead < {TARGET_OVERHEAD * 100:.0f} %")
    for r in latency:
        click.echo(f"{r['artifact']}: {r['backend']} {r['ms_per_step']:.2f} ms/step")
    if loops:
        click.echo(loops_table(loops))
        click.echo("goal: 0 bytes and 0 syncs per step after the first in the step loop; one copy out at the end")


if __name__ == "__main__":
    main()
