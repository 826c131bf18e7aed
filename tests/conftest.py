from __future__ import annotations

import importlib
import json
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pytest
import torch

from ptdit import PTDiT, preset

# The fast tier (python3 -m pytest -m "not slow", README "Set up and run") leaves out what exports or builds many
# variants, runs the docs' examples or starts a server: every test that uses one of these fixtures, and the modules
# that mark themselves slow (pytestmark). CI runs everything.
SLOW_FIXTURES = {"pipelines", "video_pipeline", "video_clip", "exports", "mid_onnx", "server", "triton", "fp8"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def model_inputs(batch: int, latent_fhw: tuple[int, int, int], text_len: int = 12, seed: int = 0,
                 in_channels: int = 4, text_dim: int = 4096) -> tuple[torch.Tensor, ...]:
    """Seeded (latent, timestep, text_embeds, text_mask); F == 1 gives a 4D image latent."""
    gen = torch.Generator().manual_seed(seed)
    f, h, w = latent_fhw
    shape = (batch, in_channels, h, w) if f == 1 else (batch, in_channels, f, h, w)
    latent = torch.randn(shape, generator=gen)
    timestep = torch.rand(batch, generator=gen) * 1000
    text = torch.randn(batch, text_len, text_dim, generator=gen)
    mask = torch.ones(batch, text_len, dtype=torch.int64)
    mask[:, text_len // 2 + 1:] = 0  # padded tail, as a tokenizer produces
    return latent, timestep, text, mask


@pytest.fixture(scope="session")
def tiny_model() -> PTDiT:
    return PTDiT(preset("tiny")).eval()


@pytest.fixture(scope="session")
def pipelines(tmp_path_factory) -> dict[int, Path]:
    """Tiny pipeline folders (ptdit-export --pipeline, default checks) at 256 and 1024, made once per run."""
    out = tmp_path_factory.mktemp("pipelines")
    runs = [subprocess.Popen([sys.executable, "-m", "export", "--preset", "tiny", "--res", str(res), "--pipeline",
                              "--out", str(out)], cwd=Path(__file__).resolve().parent.parent,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for res in (256, 1024)]
    for run in runs:  # a folder each (one command's sizes make one folder)
        _, stderr = run.communicate(timeout=900)
        assert run.returncode == 0, stderr
    return {res: out / f"ptdit-tiny-{res}-pipeline" for res in (256, 1024)}


# 16:9 and 9:16 of the 1024 class (its 1024:common bins), tiled by the VAE decode on both axes
SIZED = ("1408x768", "768x1408")


@pytest.fixture(scope="session")
def sized_pipeline(tmp_path_factory) -> Path:
    """A tiny pipeline folder of two sizes that are not square (ptdit-export --size ... --size ... --pipeline)."""
    out = tmp_path_factory.mktemp("sized")
    sizes = [arg for size in SIZED for arg in ("--size", size)]
    result = subprocess.run([sys.executable, "-m", "export", "--preset", "tiny", *sizes, "--pipeline", "--out",
                             str(out)], cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return out / f"ptdit-tiny-{'+'.join(SIZED)}-pipeline"


@pytest.fixture(scope="session")
def video_pipeline(tmp_path_factory) -> Path:
    """A tiny video pipeline folder at 256 px, 12 latent frames (45 frames out: the published decode's two causal
    chunks, of 8 and 5 latent frames), with the step graph it samples with (--step); default checks."""
    out = tmp_path_factory.mktemp("video")
    result = subprocess.run([sys.executable, "-m", "export", "--preset", "tiny", "--res", "256", "--frames", "12",
                             "--step", "--pipeline", "--out", str(out)], cwd=Path(__file__).resolve().parent.parent,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return out / "ptdit-tiny-256-f12-pipeline"


@pytest.fixture(scope="session")
def trained_pipeline(tmp_path_factory) -> Path:
    """A tiny pipeline folder at 256 px of the trained tiny checkpoint (bench/train_tiny.py), with its step graph
    (--step); no checks (seconds)."""
    out = tmp_path_factory.mktemp("trained")
    result = subprocess.run([sys.executable, "-m", "export", "--preset", "tiny", "--res", "256", "--step",
                             "--pipeline", "--checkpoint", str(TRAINED_CHECKPOINT), "--checks", "none", "--out",
                             str(out)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return out / "ptdit-tiny-256-pipeline"


ROOT = Path(__file__).resolve().parent.parent
TRAINED_CHECKPOINT = ROOT / "bench" / "data" / "tiny-trained.safetensors"
TRAINED_PROMPTS = ("a bright disk on a dark ground", "horizontal stripes", "a checkerboard", "concentric rings")


@pytest.fixture(scope="session")
def video_clip(video_pipeline, tmp_path_factory) -> tuple[Path, dict]:
    """ptdit-run of the video pipeline to .mp4 (2 steps, seed 3) and its --json summary, made once per run."""
    clip = tmp_path_factory.mktemp("clip") / "clip.mp4"
    result = subprocess.run([sys.executable, "-m", "runtime", str(video_pipeline), *VIDEO_CLIP_ARGS, "--out", str(clip),
                             "--json"], cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return clip, json.loads(result.stdout)


VIDEO_CLIP_ARGS = ("--prompt", "a red fox running in the snow", "--steps", "2", "--seed", "3")


def plan_manifest_for(onnx_path: Path, plan: Path, target: str = "tensorrt", version: str = "10.13.3.9",
                      targets: tuple[tuple[str, ...], str] = (("9.0",), "build GPU"), identity: dict | None = None,
                      **options: bool):
    """A valid plan manifest for `plan` (any bytes: no engine is built) made from the ONNX manifest next to
    `onnx_path`, as ptdit-build would record it; `options` are BuildOptions fields."""
    from ptdit.contract.files import file_sha256
    from ptdit.contract.manifests import read_artifact_manifest
    from ptdit.contract.plan_manifest import (
        BuilderInfo,
        BuildOptions,
        BuildRecord,
        PlanFile,
        PlanManifest,
        PlanSource,
        Targets,
    )

    onnx = read_artifact_manifest(onnx_path)
    module = {"tensorrt": "tensorrt", "rtx": "tensorrt_rtx"}[target]
    return PlanManifest(
        plan=PlanFile(plan.name, file_sha256(plan), plan.stat().st_size),
        onnx=PlanSource(onnx_path.name, onnx.artifact.sha256[onnx_path.name], onnx_path.with_suffix(".json").name),
        builder=BuilderInfo(target, module, version, True), targets=Targets(*targets), build_gpu=None,
        build=BuildRecord([], BuildOptions(**options), 0.0, 0.0, 0, 0, "network", identity or {}),
        precision=onnx.precision, inputs=onnx.inputs, outputs=onnx.outputs, model=onnx.model, export=onnx.export,
        geometry=onnx.geometry, block_outputs=onnx.block_outputs)


@lru_cache(maxsize=None)
def _export(precision: str, res: int = 256, extra: tuple[str, ...] = ()) -> Path:
    import tempfile

    out = Path(tempfile.mkdtemp(prefix=f"ptdit-tests-{precision}-"))
    subprocess.run([sys.executable, "-m", "export", "--preset", "tiny", "--res", str(res), "--precision", precision,
                    "--out", str(out), "--skip-checks", *extra], check=True, capture_output=True)
    return next(out.glob("*.onnx"))


def artifact_copy(directory: Path, precision: str = "fp32", res: int = 256, extra: tuple[str, ...] = ()) -> Path:
    """A fresh copy in `directory` of a tiny export (made once per session for each set of arguments, unchecked)."""
    source = _export(precision, res, extra)
    for f in source.parent.iterdir():
        shutil.copy(f, directory / f.name)
    return directory / source.name


def fake_plan(directory: Path, trt_version: str = "10.13.3.9", cc: str = "9.0", vc: bool = False,
              target: str = "tensorrt", **options: bool) -> Path:
    """A plan file and a manifest of the plan schema (not an engine: for the checks before deserializing)."""
    from ptdit.contract.manifests import write_manifest

    onnx_path = artifact_copy(directory)
    plan = directory / "m.plan"
    plan.write_bytes(b"not really a plan")
    manifest = plan_manifest_for(onnx_path, plan, target, trt_version, ((cc,), "build GPU"), version_compatible=vc,
                                 **options)
    write_manifest(plan.with_suffix(".json"), manifest)
    return plan


# What the failure-path tests of every stage share: a command run in this process, and inputs edited to lie.
TINY = ["--preset", "tiny", "--res", "256"]
STEM = "ptdit-tiny-256-b2-fp16"
COMMANDS = {"export": "export.cli", "engines": "engines.cli", "runtime": "runtime.cli.run", "diff": "runtime.cli.diff"}


@dataclass
class Ran:
    returncode: int
    stderr: str


def run_command(module: str, *args: str) -> Ran:
    """A command run in this process through its click entry point (ptdit-export, ptdit-build, ptdit-run,
    ptdit-diff): its exit code and stderr, as a shell sees them. Signals and concurrency use real processes."""
    from click.testing import CliRunner

    result = CliRunner().invoke(importlib.import_module(COMMANDS[module]).main, list(args))
    return Ran(result.exit_code, result.stderr)


def one_error_line(result: Ran, prog: str) -> str:
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith(f"{prog}: error: ")]
    assert len(lines) == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1] == lines[0], result.stderr  # the last line, no traceback after
    return lines[0]


@pytest.fixture
def folder(pipelines: dict[int, Path]) -> Path:
    """The tiny pipeline folder at 256, whose transformer is a plain export."""
    return pipelines[256]


def on_a_terminal() -> None:
    """Popen's preexec_fn for a command that a test stops with SIGINT: SIGINT at its default, as for a command in
    the foreground of a terminal, whatever the test run was started with (a background job ignores it)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def copy_artifact(source: Path, stem: str, to: Path) -> Path:
    to.mkdir(exist_ok=True)
    for f in source.glob(f"{stem}.*"):
        shutil.copy(f, to / f.name)
    return to / f"{stem}.onnx"


def edit_json(path: Path, edit: object) -> None:
    data = json.loads(path.read_text())
    edit(data)  # type: ignore[operator]
    path.write_text(json.dumps(data))
