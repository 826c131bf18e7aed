"""Real engines without a GPU: exports made here are parsed and built by TensorRT-RTX's builder, ahead of time
on this CPU. Everything that can be checked without a GPU is checked: the export's own parse check, the build,
the plan's size and hashes, its I/O (from the built network) against the export manifest, the plan manifest,
and the CLI's rules for what TensorRT-RTX cannot do. Running a plan needs a GPU: tests/test_gpu.py."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from conftest import on_a_terminal

ROOT = Path(__file__).resolve().parents[2]

if importlib.util.find_spec("tensorrt_rtx") is None:
    if os.environ.get("CI"):  # the test extra installs it: a CI run without it is a broken install
        raise RuntimeError("tensorrt_rtx is not installed: pip install -e '.[test]' installs tensorrt-rtx-cu13")
    pytest.skip("TensorRT-RTX is not installed (pip install tensorrt-rtx-cu13)", allow_module_level=True)

import tensorrt_rtx  # noqa: E402

pytestmark = pytest.mark.slow  # builds engines with TensorRT-RTX

# (precision, resolution, frames, variant): tiny exports built for real in CI. Variants: None (strided proxies,
# the resolution table's windows), "mean" (--proxy mean), "qihoo" (the qihoo-t2x preset's settings at tiny size:
# fixed 8 x 8 attention and proxy windows, mean proxies), "interleaved" (8 x 8 windows holding 4 interleaved
# strided proxies each: the proxy axes that made rank 9 before), "step" (the step graph of --step: guidance and
# the Euler update in the graph), "step-b1" (the unguided step graph of --batch 1 --step).
MATRIX = [("fp16", 256, None, None), ("fp16", 1024, None, None), ("fp16", 2048, None, None),
          ("fp32", 256, None, None), ("fp32", 1024, None, None), ("fp32", 2048, None, None),
          ("fp16", 256, 4, None), ("bf16", 256, None, None), ("fp16", 512, None, "mean"),
          ("fp16", 256, None, "qihoo"), ("fp16", 1024, None, "qihoo"), ("fp16", 256, None, "interleaved"),
          ("fp16", 256, None, "step"), ("fp16", 1024, None, "step"), ("fp16", 256, None, "step-b1"),
          ("fp16", 256, 4, "step"),
          # sizes that are not square (--size WIDTHxHEIGHT): 2:1, and 1:2 as a step graph and as video (16:9 and
          # 9:16 of the 1024 class, with every VAE tile their decodes need: test_sized_pipeline_components_...)
          ("fp16", "512x256", None, None), ("fp16", "256x512", None, "step"), ("fp16", "256x512", 4, None)]
BASE = ("fp16", 256, None, None)
QIHOO_TINY = {"name": "qihoo-tiny", "depth": 2, "num_heads": 2, "head_dim": 32, "window": [1, 8, 8],
              "proxy_window": [1, 8, 8], "proxy_mode": "mean", "train_proxy_mode": "mean"}


def run(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True)


def export(out: Path, precision: str, res: int | str, frames: int | None, variant: str | None) -> Path:
    """A tiny export with the default (fast) checks, which include the real parse."""
    out.mkdir(parents=True)
    video = ["--frames", str(frames)] if frames else []
    model = ["--preset", "tiny"]
    if variant == "mean":
        model += ["--proxy", "mean"]
    elif variant in ("qihoo", "interleaved"):
        config = QIHOO_TINY if variant == "qihoo" else {**QIHOO_TINY, "name": "interleaved-tiny",
                                                          "proxy_window": [1, 4, 4], "proxy_mode": "strided"}
        (out / "config.json").write_text(json.dumps(config))
        model = ["--config", str(out / "config.json")]
    elif variant in ("step", "step-b1"):
        model += ["--step", "--batch", "1" if variant == "step-b1" else "2"]
    size = ["--size", res] if isinstance(res, str) else ["--res", str(res)]
    result = run("export", *model, *size, "--precision", precision, *video, "--out", str(out))
    assert result.returncode == 0, result.stderr
    name = {"qihoo": "qihoo-tiny", "interleaved": "interleaved-tiny"}.get(variant or "", "tiny")
    batch, step = ("b1", "-step") if variant == "step-b1" else ("b2", "-step" if variant == "step" else "")
    return out / f"ptdit-{name}-{res}{f'-f{frames}' if frames else ''}-{batch}-{precision}{step}.onnx"


def key_id(key: tuple) -> str:
    precision, res, frames, variant = key
    return f"{precision}-{res}" + (f"-f{frames}" if frames else "") + (f"-{variant}" if variant else "")


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[tuple, Path]:
    """Each export is a process of its own, two at a time (most of an export is one thread: the trace)."""
    from concurrent.futures import ThreadPoolExecutor

    out = tmp_path_factory.mktemp("exports")
    with ThreadPoolExecutor(max_workers=2) as pool:
        paths = list(pool.map(lambda key: export(out / key_id(key), *key), MATRIX))
    return dict(zip(MATRIX, paths))


def weight_bytes(path: Path) -> int:
    model = onnx.load(str(path), load_external_data=False)
    return sum(onnx.numpy_helper.to_array(t).nbytes for t in model.graph.initializer)


@pytest.mark.parametrize("key", MATRIX, ids=key_id)
def test_export_is_parsed_and_built_by_tensorrt_rtx(exports, key):
    onnx_path = exports[key]
    onnx_manifest = json.loads(onnx_path.with_suffix(".json").read_text())
    parse = onnx_manifest["checks"]["tensorrt_parse"]
    assert parse["ran"] and parse["passed"] and parse["builder"] == f"TensorRT-RTX {tensorrt_rtx.__version__}"
    assert onnx_manifest["checks"]["tensorrt_ops"]["max_rank"] <= 8
    if key[3] == "qihoo":  # fixed windows at every resolution, whatever the table says
        assert onnx_manifest["geometry"]["window"] == onnx_manifest["geometry"]["proxy_window"] == [1, 8, 8]
    if key[3] in ("step", "step-b1"):  # the step graph's own contract, carried state first
        assert onnx_manifest["export"]["graph"] == "step"
        assert [t["name"] for t in onnx_manifest["outputs"]] == ["latent_next", "step_next"]
        assert onnx_manifest["export"]["step"]["guidance"] == (key[3] == "step")

    extra = ["--allow-fp32"] if key[0] == "fp32" else []
    result = run("engines", str(onnx_path), "--target", "rtx", "--json", *extra)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    plan = Path(summary["plan"])
    rtx = ".".join(tensorrt_rtx.__version__.split(".")[:2])
    assert plan.name == onnx_path.name.replace(".onnx", f"-portable-rtx{rtx}.plan")
    manifest = json.loads(plan.with_suffix(".json").read_text())

    assert manifest["schema"] == "ptdit-plan/2"
    assert manifest["builder"] == {"target": "rtx", "module": "tensorrt_rtx", "version": tensorrt_rtx.__version__,
                                   "strongly_typed": True}
    assert manifest["targets"] == {"compute_capabilities": ["8.0", "8.6", "8.9", "12.0", "12.1"],
                                   "source": "TensorRT-RTX default"}
    assert manifest["build_gpu"] is None and manifest["precision"] == key[0]
    # The plan holds the weights; its recorded size and hash are the file's.
    assert manifest["plan"]["bytes"] == plan.stat().st_size >= weight_bytes(onnx_path)
    from ptdit.contract.files import file_sha256

    assert manifest["plan"]["sha256"] == file_sha256(plan)
    # The built network's I/O is the export's contract; the builder saw the same network as the export's parse.
    assert manifest["inputs"] == onnx_manifest["inputs"] and manifest["outputs"] == onnx_manifest["outputs"]
    assert manifest["build"]["io_checked_from"].startswith("network")
    assert manifest["build"]["layers"] == parse["layers"]
    assert manifest["build"]["seconds"] > 0 and manifest["build"]["peak_rss_bytes"] > plan.stat().st_size
    memory = manifest["build"]["device_memory"]  # the builder's own figures of the engine (no GPU needed)
    assert memory["weights"] > 0 and memory["activation"] > 0 and memory["device_persistent"] >= 0
    assert manifest["onnx"]["sha256"] == onnx_manifest["artifact"]["sha256"][onnx_path.name]
    assert manifest["export"] == onnx_manifest["export"] and manifest["geometry"] == onnx_manifest["geometry"]

    again = run("engines", str(onnx_path), "--target", "rtx", *extra)
    assert again.returncode == 0 and "is up to date" in again.stderr


def test_targets_and_a_diagnostic_plan(exports, tmp_path):
    onnx_path = exports[BASE]
    result = run("engines", str(onnx_path), "--target", "rtx", "--compute-capability", "8.9,12.0", "--mark-blocks",
                 "--tiling-level", "fast", "--out", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    plan = Path(json.loads(result.stdout)["plan"])
    assert plan.name.endswith("-sm89-sm120-rtx1.7-blocks.plan") and plan.parent == tmp_path
    manifest = json.loads(plan.with_suffix(".json").read_text())
    assert manifest["targets"] == {"compute_capabilities": ["8.9", "12.0"], "source": "--compute-capability"}
    assert [t["name"] for t in manifest["outputs"]] == ["noise_pred", "block_00", "block_01"]
    assert manifest["block_outputs"]["names"] == ["block_00", "block_01"]
    assert manifest["build"]["options"]["tiling_level"] == "fast"


@pytest.mark.parametrize(
    "args,message",
    [
        (["--fp16-weak"], "--fp16-weak is not available with TensorRT-RTX"),
        (["--version-compatible"], "it has no lean runtime"),
        (["--refittable"], "--refittable needs a GPU with TensorRT-RTX"),
        (["--strip-plan"], "--strip-plan needs a GPU with TensorRT-RTX"),
        (["--timing-cache", "t.cache"], "--timing-cache is not available with TensorRT-RTX"),
        (["--compute-capability", "9.0"], "cannot build for compute capability 9.0 (Hopper"),
        (["--compute-capability", "current"], "--compute-capability current needs a visible GPU"),
    ],
)
def test_what_tensorrt_rtx_cannot_do_is_refused_in_one_line(exports, tmp_path, args, message):
    onnx_path = exports[("fp32" if "--fp16-weak" in args else "fp16", 256, None, None)]
    result = run("engines", str(onnx_path), "--target", "rtx", "--out", str(tmp_path / "out"), *args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ptdit-build: error: ") and message in lines[0]
    assert not (tmp_path / "out").exists()


def test_running_an_rtx_plan_needs_a_gpu(exports, tmp_path):
    onnx_path = exports[BASE]
    plan = Path(json.loads(run("engines", str(onnx_path), "--target", "rtx", "--out", str(tmp_path), "--json").stdout)
                ["plan"])
    if importlib.util.find_spec("cuda") is not None:
        from cuda.bindings import runtime as cudart

        if cudart.cudaGetDeviceCount()[0] == cudart.cudaError_t.cudaSuccess:
            pytest.skip("a GPU is visible: tests/test_gpu.py runs RTX plans")
    result = run("runtime", str(plan), "--random-text", "--steps", "1", "--out", str(tmp_path / "l.npy"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("ptdit-run: error: no CUDA GPU is visible")
    assert not (tmp_path / "l.npy").exists()


@pytest.fixture(scope="module")
def mid_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6-block model: it keeps the builder busy for seconds, so a signal lands mid-build."""
    out = tmp_path_factory.mktemp("mid")
    (out / "cfg.json").write_text('{"name": "mid", "depth": 6, "num_heads": 8, "head_dim": 64}')
    result = run("export", "--config", str(out / "cfg.json"), "--res", "1024", "--checks", "none", "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out / "ptdit-mid-1024-b2-fp16.onnx"


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_a_signal_during_a_build_is_answered_at_once_and_leaves_nothing(mid_onnx, tmp_path, signum):
    """Ctrl-C or SIGTERM while TensorRT-RTX builds (it holds the build in native code): exit 130 or 143
    promptly, no plan, no manifest, no partial directory, not even the output directory this run created."""
    import signal
    import time

    out = tmp_path / "plans"
    process = subprocess.Popen([sys.executable, "-m", "engines", str(mid_onnx), "--target", "rtx", "--out", str(out)],
                               cwd=ROOT, stderr=subprocess.PIPE, text=True, preexec_fn=on_a_terminal)
    assert process.stderr is not None
    for line in process.stderr:
        if "Building engine" in line:
            break
    time.sleep(0.5)
    sent = time.perf_counter()
    process.send_signal(getattr(signal, signum))
    rest = process.stderr.read()
    code = process.wait(timeout=30)
    answered = time.perf_counter() - sent
    assert code == 128 + getattr(signal, signum), rest
    word = "interrupted" if signum == "SIGINT" else "terminated"
    assert rest.strip().splitlines()[-1] == f"ptdit-build: error: {word}; nothing was written"
    assert answered < 5, answered  # measured 0.1 s; the bound only catches waiting for the build to finish
    assert not out.exists()


def test_a_triton_repository_is_written_for_a_plan_already_up_to_date(exports, tmp_path):
    onnx_path = exports[BASE]
    first = run("engines", str(onnx_path), "--target", "rtx", "--out", str(tmp_path), "--json")
    assert first.returncode == 0, first.stderr
    plan = Path(json.loads(first.stdout)["plan"])
    again = run("engines", str(onnx_path), "--target", "rtx", "--out", str(tmp_path), "--triton-repo",
                str(tmp_path / "repo"), "--json")
    assert again.returncode == 0 and "is up to date" in again.stderr, again.stderr
    model = Path(json.loads(again.stdout)["triton_model"])
    assert model == tmp_path / "repo" / plan.stem
    assert (model / "1" / "model.plan").read_bytes() == plan.read_bytes()
    assert f'name: "{plan.stem}"' in (model / "config.pbtxt").read_text()


def test_pipeline_components_are_parsed_and_built_by_tensorrt_rtx(pipelines, tmp_path):
    """ptdit-export --pipeline's text encoder (fp16 with fp32 islands) and VAE decoder tiles (fp32) pass the same
    real parse and build as the transformer."""
    folder = pipelines[1024]
    manifest = json.loads((folder / "pipeline.json").read_text())
    components = [manifest["text_encoder"]["onnx"], *manifest["vae_decoder"]["tiles"].values()]
    assert len(components) == 5
    for name in components:
        onnx_manifest = json.loads((folder / name).with_suffix(".json").read_text())
        assert onnx_manifest["checks"]["tensorrt_parse"]["builder"] == f"TensorRT-RTX {tensorrt_rtx.__version__}"
        extra = ["--allow-fp32"] if onnx_manifest["export"]["precision"] == "fp32" else []
        built = run("engines", str(folder / name), "--target", "rtx", "--out", str(tmp_path), "--json", *extra)
        assert built.returncode == 0, built.stderr
        plan_manifest = json.loads(Path(json.loads(built.stdout)["manifest"]).read_text())
        assert plan_manifest["inputs"] == onnx_manifest["inputs"]
        assert plan_manifest["outputs"] == onnx_manifest["outputs"]
        assert plan_manifest["precision"] == onnx_manifest["export"]["precision"]


def test_one_command_builds_a_plan_per_size(exports, tmp_path):
    sizes = [exports[("fp16", "512x256", None, None)], exports[("fp16", "256x512", None, "step")]]
    result = run("engines", *map(str, sizes), "--target", "rtx", "--out", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    rtx = ".".join(tensorrt_rtx.__version__.split(".")[:2])
    built = json.loads(result.stdout)
    assert [Path(b["plan"]).name for b in built] == [p.name.replace(".onnx", f"-portable-rtx{rtx}.plan") for p in sizes]
    assert all(Path(b["plan"]).is_file() and Path(b["manifest"]).is_file() for b in built)


def test_sized_pipeline_components_are_built_by_tensorrt_rtx(sized_pipeline, tmp_path):
    """Every ONNX of a folder of two sizes that are not square (16:9 and 9:16): each size's transformer, both over
    the one weights file they share, the text encoder and every VAE decoder tile the two decodes need."""
    manifest = json.loads((sized_pipeline / "pipeline.json").read_text())
    transformers = [entry["transformer"] for entry in manifest["sizes"]]
    components = [*transformers, manifest["text_encoder"]["onnx"], *manifest["vae_decoder"]["tiles"].values()]
    assert sorted(p.name for p in sized_pipeline.glob("*.onnx")) == sorted(components)
    shared = {json.loads((sized_pipeline / t).with_suffix(".json").read_text())["artifact"]["external_data"]
              for t in transformers}
    assert len(shared) == 1 and next(iter(shared)).startswith("ptdit-tiny-b2-fp16-weights-")
    for name in components:
        onnx_manifest = json.loads((sized_pipeline / name).with_suffix(".json").read_text())
        assert onnx_manifest["checks"]["tensorrt_ops"]["max_rank"] <= 8
        extra = ["--allow-fp32"] if onnx_manifest["export"]["precision"] == "fp32" else []
        built = run("engines", str(sized_pipeline / name), "--target", "rtx", "--out", str(tmp_path), "--json", *extra)
        assert built.returncode == 0, built.stderr
        plan = json.loads(Path(json.loads(built.stdout)["manifest"]).read_text())
        assert plan["inputs"] == onnx_manifest["inputs"] and plan["outputs"] == onnx_manifest["outputs"]


def test_every_video_component_is_built_by_tensorrt_rtx(video_pipeline, tmp_path):
    """Every ONNX of a video pipeline folder (the video transformer, its step graph, the text encoder and the VAE
    decoder of each causal chunk length) builds, its plan's I/O the ONNX's."""
    manifest = json.loads((video_pipeline / "pipeline.json").read_text())
    components = [manifest["transformer"], manifest["step_graph"], manifest["text_encoder"]["onnx"],
                  *manifest["vae_decoder"]["tiles"].values()]
    assert sorted(p.name for p in video_pipeline.glob("*.onnx")) == sorted(components)
    for name in components:
        onnx_manifest = json.loads((video_pipeline / name).with_suffix(".json").read_text())
        extra = ["--allow-fp32"] if onnx_manifest["export"]["precision"] == "fp32" else []
        built = run("engines", str(video_pipeline / name), "--target", "rtx", "--out", str(tmp_path), "--json", *extra)
        assert built.returncode == 0, built.stderr
        plan = json.loads(Path(json.loads(built.stdout)["manifest"]).read_text())
        assert plan["inputs"] == onnx_manifest["inputs"] and plan["outputs"] == onnx_manifest["outputs"]


@pytest.mark.parametrize("component,precision", [("t5", "fp32"), ("t5", "bf16"), ("vae", "fp16"),
                                                 ("vae_video", "fp16")])
def test_pipeline_component_precisions_are_built_by_tensorrt_rtx(tmp_path, component, precision):
    """The precisions --text-encoder-precision and --vae-precision offer besides the defaults (built above); for video,
    a causal chunk of 2 latent frames."""
    from export.options import ExportOptions, PipelineOptions
    from export.pipeline.components import export_text_encoder, export_vae_tile
    from export.progress import Stages
    from ptdit import preset
    from ptdit.contract.onnx_manifest import Weights
    from ptdit.contract.sizes import Size
    from ptdit.t5 import T5_PRESETS, T5Encoder
    from ptdit.vae import VAE_PRESETS, CausalVAEDecoder

    stages, seeded = Stages(lambda line: None), Weights("seeded", seed=0)
    if component == "t5":
        opts = ExportOptions(preset("tiny"), [Size(256, 256)], out_dir=tmp_path)
        name = export_text_encoder(T5Encoder(T5_PRESETS["tiny"]).eval(), seeded, opts,
                                   PipelineOptions(text_encoder_precision=precision), tmp_path, stages)[0].onnx
    else:
        shape = (64, 16) if component == "vae" else (2, 8, 8)
        name = export_vae_tile(CausalVAEDecoder(VAE_PRESETS["tiny"]).eval(), seeded, shape,
                               PipelineOptions(vae_precision=precision), tmp_path, stages, "fast")
    checks = json.loads((tmp_path / name).with_suffix(".json").read_text())["checks"]
    assert checks["tensorrt_parse"]["passed"] and checks["onnxruntime_parity"]["passed"]
    extra = ["--allow-fp32"] if precision == "fp32" else []
    built = run("engines", str(tmp_path / name), "--target", "rtx", "--json", *extra)
    assert built.returncode == 0, built.stderr
    assert json.loads(Path(json.loads(built.stdout)["manifest"]).read_text())["precision"] == precision
