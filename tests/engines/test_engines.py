"""ptdit-build without TensorRT: option rules, manifests, staleness, I/O verification, Triton config, errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import types
from dataclasses import replace
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

from conftest import artifact_copy, plan_manifest_for
from engines.build import check_io, preflight, weights_precision
from engines.builder import PlanIO
from engines.cli import main
from engines.errors import BuildError
from engines.gpu import GpuInfo
from engines.options import BUILD, validate
from engines.plan_files import OnnxArtifact, existing_plan_state, load_onnx, plan_stem
from engines.targets import RTX_DEFAULT, parse_compute_capabilities, resolve
from engines.tensorrt_api import Flavour
from ptdit.contract.errors import InputError, flag_of
from ptdit.contract.files import write_json
from ptdit.contract.manifests import write_manifest
from ptdit.contract.onnx_manifest import TensorSpec
from ptdit.contract.plan_manifest import BuildOptions, Targets
from ptdit.contract.triton_config import config_pbtxt, write_model

ROOT = Path(__file__).resolve().parents[2]




def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stderr


class FakeBuilderFlag:
    FP16 = object()  # present on TensorRT 10.x only


def flavour(kind: str) -> Flavour | None:
    """A Flavour whose module has just what validate() looks at: the version and BuilderFlag."""
    if kind == "none":
        return None
    flags = FakeBuilderFlag if kind == "trt10" else type("BuilderFlag", (), {})
    version = {"trt10": "10.13.3.9", "trt11": "11.4.0.106", "rtx": "1.7.1.116"}[kind]
    module = types.SimpleNamespace(__version__=version, BuilderFlag=flags, __name__="fake")
    return Flavour("rtx" if kind == "rtx" else "tensorrt", module)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "options,precision,kind,has_gpu,message",
    [
        (BuildOptions(workspace_gib=0), "fp16", "none", True, "--workspace must be a finite number in (0, 4096]"),
        (BuildOptions(opt_level=6), "fp16", "none", True, "--opt-level must be an integer in [0, 5]"),
        (BuildOptions(tiling_level="max"), "fp16", "none", True, "--tiling-level must be one of none, fast"),
        (BuildOptions(exclude_lean_runtime=True), "fp16", "none", True, "only applies with --version-compatible"),
        (BuildOptions(fp16_weak=True), "fp32", "trt11", True, "--fp16-weak needs TensorRT 10.x"),
        (BuildOptions(fp16_weak=True), "fp16", "trt10", True, "this ONNX is fp16: build it without --fp16-weak"),
        (BuildOptions(fp16_weak=True, weight_streaming=True), "fp32", "trt10", True, "needs a strongly typed network"),
        (BuildOptions(), "fp32", "trt11", True, "export fp16 (ptdit-export --precision fp16), or pass --allow-fp32"),
        (BuildOptions(), "fp32", "trt10", True, "or add --fp16-weak (TensorRT 10.x)"),
        (BuildOptions(fp16_weak=True), "fp32", "rtx", True, "--fp16-weak is not available with TensorRT-RTX 1.7.1.116"),
        (BuildOptions(version_compatible=True), "fp16", "rtx", True, "it has no lean runtime (libnvinfer_lean)"),
        (BuildOptions(refittable=True), "fp16", "rtx", False, "--refittable needs a GPU with TensorRT-RTX"),
        (BuildOptions(strip_plan=True), "fp16", "rtx", False, "--strip-plan needs a GPU with TensorRT-RTX"),
        (BuildOptions(timing_cache=Path("t")), "fp16", "rtx", True,
         "--timing-cache is not available with TensorRT-RTX"),
    ],
)
def test_option_rules(options, precision, kind, has_gpu, message):
    """`message` as ptdit-build shows it (its flags); a Python caller reads the parameters (build_engine's)."""
    with pytest.raises(InputError) as raised:
        validate(options, precision, flavour(kind), has_gpu)
    assert message in raised.value.render(lambda name: BUILD.flags().get(name) or flag_of(name))
    python = str(raised.value)
    assert not re.search(r"(?<!ptdit-export )--(?!precision)[a-z]", python), python


@pytest.mark.parametrize(
    "options,precision,kind,has_gpu",
    [(BuildOptions(), "fp16", "trt10", True), (BuildOptions(), "bf16", "trt11", True),
     (BuildOptions(allow_fp32=True), "fp32", "trt11", True), (BuildOptions(fp16_weak=True), "fp32", "trt10", True),
     (BuildOptions(version_compatible=True, exclude_lean_runtime=True, refittable=True, strip_plan=True), "fp16",
      "trt11", True),
     (BuildOptions(weight_streaming=True, tiling_level="fast"), "fp16", "rtx", False),
     (BuildOptions(refittable=True, strip_plan=True), "fp16", "rtx", True)],
)
def test_accepted_option_sets(options, precision, kind, has_gpu):
    validate(options, precision, flavour(kind), has_gpu)


def test_flag_options_order_and_identity():
    options = BuildOptions(strip_plan=True, refittable=True, version_compatible=True)
    assert options.flag_options == ["version_compatible", "refittable", "strip_plan"]
    assert "timing_cache" not in options.comparable()
    assert BuildOptions(timing_cache=Path("a")).comparable() == BuildOptions().comparable()


def test_onnx_and_manifest_are_checked_against_each_other(tmp_path):
    onnx_path = artifact_copy(tmp_path, "fp16")
    artifact = load_onnx(onnx_path)
    assert artifact.precision == "fp16" and artifact.stem == "ptdit-tiny-256-b2-fp16"
    assert weights_precision(onnx.load(str(onnx_path), load_external_data=False), onnx_path.name) == "fp16"
    with open(onnx_path, "ab") as f:
        f.write(b"\0")
    with pytest.raises(InputError, match="does not match its manifest"):
        load_onnx(onnx_path)


def test_manifest_lying_about_precision(tmp_path):
    onnx_path = artifact_copy(tmp_path, "fp32")
    manifest_path = onnx_path.with_suffix(".json")
    manifest = json.loads(manifest_path.read_text())
    manifest["export"]["precision"] = "fp16"
    write_json(manifest_path, manifest)
    with pytest.raises(InputError, match=r"is not the graph its manifest describes \(the graph records another "
                                         r"precision\)"):
        preflight(onnx_path, BuildOptions())


@pytest.mark.parametrize(
    "setup,message",
    [
        ("not_onnx", "is not an .onnx file"),
        ("missing", "does not exist"),
        ("no_manifest", "has no manifest"),
        ("foreign_manifest", "is not a ptdit-export manifest"),
        ("corrupt_manifest", "is not readable JSON"),
    ],
)
def test_bad_inputs_exit_2(tmp_path, setup, message):
    onnx_path = artifact_copy(tmp_path, "fp16")
    target = onnx_path
    if setup == "not_onnx":
        target = onnx_path.with_suffix(".pb")
        target.write_bytes(b"")
    elif setup == "missing":
        target = tmp_path / "absent.onnx"
    elif setup == "no_manifest":
        onnx_path.with_suffix(".json").unlink()
    elif setup == "foreign_manifest":
        onnx_path.with_suffix(".json").write_text('{"schema": "something-else"}')
    elif setup == "corrupt_manifest":
        onnx_path.with_suffix(".json").write_text("{")
    before = sorted(p.name for p in tmp_path.iterdir())
    code, stderr = run(str(target))
    assert code == 2 and message in stderr
    assert stderr.strip().splitlines()[-1].startswith("ptdit-build: error:") and "Traceback" not in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_timing_cache_location_is_checked_before_building(tmp_path):
    code, stderr = run(str(artifact_copy(tmp_path, "fp16")), "--timing-cache", str(tmp_path / "missing" / "t.cache"))
    assert code == 2 and "must be a file in an existing directory" in stderr
    code, stderr = run(str(artifact_copy(tmp_path, "fp16")), "--timing-cache", str(tmp_path))
    assert code == 2 and "is a directory" in stderr


def test_a_weightless_plan_is_not_shipped_to_triton(tmp_path):
    code, stderr = run(str(artifact_copy(tmp_path, "fp16")), "--strip-plan", "--triton-repo", str(tmp_path / "repo"))
    assert code == 2 and "would ship a weightless plan that Triton Inference Server cannot refit" in stderr
    assert not (tmp_path / "repo").exists()


def test_fp32_onnx_is_refused_before_tensorrt_is_needed(tmp_path):
    code, stderr = run(str(artifact_copy(tmp_path, "fp32")))
    assert code == 2 and "the engine would be fp32" in stderr


@pytest.mark.skipif(__import__("importlib").util.find_spec("tensorrt") is not None, reason="TensorRT is installed")
def test_without_tensorrt_the_error_says_what_to_install(tmp_path):
    code, stderr = run(str(artifact_copy(tmp_path, "fp16")), "--target", "tensorrt")
    assert code == 2
    assert "TensorRT is not installed" in stderr and "pip install --extra-index-url https://pypi.nvidia.com" in stderr


def test_plan_stem_names_the_targets_and_the_builder():
    tensorrt = Flavour("tensorrt", types.SimpleNamespace(__version__="10.13.3.9"))  # type: ignore[arg-type]
    rtx = Flavour("rtx", types.SimpleNamespace(__version__="1.7.1.116"))  # type: ignore[arg-type]
    gpu = GpuInfo("NVIDIA H100", "9.0")
    assert plan_stem("ptdit-xl-1024-b2-fp16", resolve("tensorrt", (), gpu).tag, tensorrt.plan_tag, False) == \
        "ptdit-xl-1024-b2-fp16-sm90-trt10.13"
    assert plan_stem("m", resolve("rtx", ("8.6", "12.0"), None).tag, rtx.plan_tag, True) == "m-sm86-sm120-rtx1.7-blocks"
    assert plan_stem("m", resolve("rtx", (), None).tag, rtx.plan_tag, False) == "m-portable-rtx1.7"


def test_compute_capability_targets():
    assert parse_compute_capabilities(("12.0,8.6", "8.6")) == ("8.6", "12.0")
    assert resolve("rtx", (), None) == Targets(RTX_DEFAULT, "TensorRT-RTX default")
    assert resolve("rtx", ("current",), GpuInfo("RTX 4090", "8.9")) == Targets(("8.9",), "--compute-capability")
    assert resolve("tensorrt", (), GpuInfo("NVIDIA H100", "9.0")) == Targets(("9.0",), "build GPU")
    for requested, gpu, message in [
        (("current",), None, "compute_capabilities='current' needs a visible GPU"),
        (("9.0",), None, r"cannot build for compute capability 9.0 \(Hopper: build with full TensorRT"),
        (("10.0",), None, "cannot build for compute capability 10.0"),
    ]:
        with pytest.raises(InputError, match=message):
            resolve("rtx", parse_compute_capabilities(requested), gpu)
    with pytest.raises(InputError, match="is not MAJOR.MINOR"):
        parse_compute_capabilities(("sm89",))
    with pytest.raises(InputError, match="do not combine it with others"):
        parse_compute_capabilities(("current,8.9",))
    with pytest.raises(InputError, match="full TensorRT builds for the GPU it runs on"):
        resolve("tensorrt", ("8.9",), GpuInfo("NVIDIA H100", "9.0"))
    with pytest.raises(InputError, match="no CUDA GPU is visible: full TensorRT builds on the GPU"):
        resolve("tensorrt", (), None)


def test_stale_and_current_plans(tmp_path):
    artifact = load_onnx(artifact_copy(tmp_path, "fp16"))
    identity = {"onnx_sha256": artifact.sha256, "builder": "TensorRT 10.13.3.9",
                "targets": Targets(("9.0",), "build GPU").to_dict(), "options": BuildOptions().comparable()}
    plan = tmp_path / "m.plan"
    def state(wanted: dict = identity) -> tuple[str, str]:
        existing = existing_plan_state(plan, artifact, wanted)
        return existing.state, existing.why

    assert state() == ("absent", "")
    plan.write_bytes(b"plan bytes")
    assert state() == ("stale", "m.plan has no manifest, so its origin is unknown")
    manifest = plan_manifest_for(artifact.path, plan, identity=identity)
    write_manifest(plan.with_suffix(".json"), manifest)
    assert state() == ("current", "")
    kind, why = state({**identity, "builder": "TensorRT 11.4.0.106"})
    assert kind == "stale" and "another builder" in why
    plan.write_bytes(b"tampered")
    assert state() == ("stale", "m.plan does not match its manifest")
    write_manifest(plan.with_suffix(".json"), replace(manifest, onnx=replace(manifest.onnx, sha256="0" * 64)))
    kind, why = state()
    assert kind == "stale" and "built from a different ONNX" in why


def manifest_io(tmp_path: Path) -> tuple[OnnxArtifact, PlanIO]:
    artifact = load_onnx(artifact_copy(tmp_path, "fp16"))
    return artifact, PlanIO(list(artifact.manifest.inputs), list(artifact.manifest.outputs))


def test_plan_io_must_match_the_manifest(tmp_path):
    artifact, io = manifest_io(tmp_path)
    check_io(io, artifact, mark_blocks=False)
    fp32_output_lost = PlanIO(io.inputs,
                              [replace(t, dtype="float16") if t.name == "noise_pred" else t for t in io.outputs])
    with pytest.raises(BuildError, match="noise_pred dtype is float16, the manifest says float32"):
        check_io(fp32_output_lost, artifact, mark_blocks=False)
    with pytest.raises(BuildError, match="text_mask missing"):
        check_io(PlanIO([t for t in io.inputs if t.name != "text_mask"], io.outputs), artifact, mark_blocks=False)
    with pytest.raises(BuildError, match="block_00 missing"):
        check_io(io, artifact, mark_blocks=True)
    blocks = artifact.manifest.block_outputs
    marked = PlanIO(io.inputs, io.outputs + [TensorSpec(n, tuple(blocks.shape), "float16") for n in blocks.names])
    check_io(marked, artifact, mark_blocks=True)


def test_triton_config_is_valid_for_tritons_schema(tmp_path):
    _, io = manifest_io(tmp_path)
    text = config_pbtxt("ptdit-tiny", io.inputs, io.outputs)
    model_config = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    from google.protobuf import text_format

    parsed = text_format.Parse(text, model_config.ModelConfig())
    assert parsed.platform == "tensorrt_plan" and parsed.max_batch_size == 0
    assert [i.name for i in parsed.input] == ["latent", "timestep", "text_embeds", "text_mask"]
    assert list(parsed.input[0].dims) == [2, 4, 32, 32]
    assert model_config.DataType.Name(parsed.input[3].data_type) == "TYPE_INT64"
    assert model_config.DataType.Name(parsed.output[0].data_type) == "TYPE_FP32"
    plan = tmp_path / "x.plan"
    plan.write_bytes(b"plan")
    model_dir = tmp_path / "repo" / "ptdit-tiny"
    write_model(model_dir, "ptdit-tiny", plan, io.inputs, io.outputs)
    assert (model_dir / "1" / "model.plan").read_bytes() == b"plan"
    assert (model_dir / "config.pbtxt").read_text() == config_pbtxt("ptdit-tiny", io.inputs, io.outputs)


def test_help_is_instant_and_has_examples():
    result = subprocess.run(["ptdit-build", "--help"], capture_output=True, text=True, check=True)
    assert "Examples:" in result.stdout and "--fp16-weak" in result.stdout and "--timing-cache" in result.stdout
    probe = ("import sys, engines.cli, engines.build, engines.builder; print(sorted(m for m in sys.modules if m in "
             "('torch', 'tensorrt') or m.startswith('ptdit.') and not m.startswith('ptdit.contract')))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT).stdout
    assert loaded.strip() == "[]"


def test_one_tensorrt_logger_per_module_and_process():
    """TensorRT keeps the first logger it is given for the whole process: every build reuses one per module,
    reporting to the current build and with the previous build's errors cleared."""
    trt = pytest.importorskip("tensorrt_rtx")
    from ptdit.contract.tensorrt import logger_for

    first_lines: list[str] = []
    second_lines: list[str] = []
    first = logger_for(trt, first_lines.append)
    first.log(trt.ILogger.Severity.ERROR, "an old error")
    second = logger_for(trt, second_lines.append)
    second.log(trt.ILogger.Severity.WARNING, "a warning")
    assert second is first and first.errors == [] and first_lines == [] and second_lines == ["    [TensorRT] a warning"]
