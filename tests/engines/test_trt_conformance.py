"""Static API conformance of engines/ (and the TensorRT parts of runtime/) against stubs generated from the
real TensorRT 10.13 and 11.4 bindings and the installed TensorRT-RTX bindings, plus API-level probes with
those bindings imported on this GPU-less machine (full TensorRT on stand-in libraries, TensorRT-RTX for real).
Nothing here runs an engine.

Type-check configurations (MYPYPATH): "10.13.3.9" and "11.4.0.106" (that version's stubs as `tensorrt`, the
RTX stubs as `tensorrt_rtx`), and "rtx" (a `tensorrt` shim over the RTX bindings' stubs: the code typed
against `tensorrt` is handed the tensorrt_rtx module at run time, so it is checked against the RTX API)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import trt_stubs

pytestmark = pytest.mark.slow  # mypy over the stubs of three TensorRT bindings

ROOT = Path(__file__).resolve().parents[2]
VERSIONS = ["10.13.3.9", "11.4.0.106"]
CONFIGURATIONS = [*VERSIONS, "rtx"]
TRT_CODE = ["engines", "runtime", "ptdit/contract"]


@pytest.fixture(scope="session", params=VERSIONS)
def bindings(request) -> trt_stubs.Bindings:
    return trt_stubs.prepare(request.param)


def rtx_stubs() -> trt_stubs.RtxStubs:
    stubs = trt_stubs.prepare_rtx()
    if stubs is None:
        pytest.skip(f"TensorRT-RTX is not installed ({trt_stubs.RTX_DISTRIBUTION}): pip install tensorrt-rtx-cu13")
    return stubs


def stub_path(configuration: str) -> list[Path]:
    """The MYPYPATH directories of a type-check configuration (see the module's docstring)."""
    rtx = rtx_stubs()
    if configuration == "rtx":
        return [rtx.as_tensorrt, rtx.stubs]
    return [trt_stubs.prepare(configuration).stubs, rtx.stubs]


@pytest.fixture(scope="session", params=CONFIGURATIONS)
def configuration(request) -> str:
    stub_path(request.param)  # prepares the stubs, or skips
    return request.param


CACHES = tempfile.TemporaryDirectory(prefix="ptdit-mypy-")  # one mypy cache per configuration, for this run only


def mypy(configuration: str, *targets: str) -> subprocess.CompletedProcess[str]:
    """mypy with the stubs of `configuration`. Incremental, with a cache of its own per configuration (so that the
    stubs of one never stand in for another's), made fresh for each test run."""
    env = dict(os.environ)
    env["MYPYPATH"] = os.pathsep.join(str(p) for p in stub_path(configuration))
    env.pop("PYTHONPATH", None)  # types come from the stubs, not from the importable modules
    cache = Path(CACHES.name) / configuration
    return subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "setup.cfg"), "--cache-dir",
                           str(cache), *targets], cwd=ROOT, env=env, capture_output=True, text=True)


def test_our_tensorrt_code_conforms(configuration):
    result = mypy(configuration, *TRT_CODE)
    assert result.returncode == 0, f"TensorRT {configuration}:\n{result.stdout}{result.stderr}"


def test_the_whole_project_type_checks():
    """All four packages (type hints are part of the code's contract); TensorRT types from the 11.4 stubs,
    TensorRT-RTX types from the installed RTX bindings' stubs."""
    result = mypy(VERSIONS[-1], "ptdit", "export", "engines", "runtime")
    assert result.returncode == 0, result.stdout + result.stderr


MISTAKES = {
    # (code, error expected on 10.x, on 11.x, on TensorRT-RTX as `tensorrt`); `rtx_config` is always typed
    # as tensorrt_rtx.IBuilderConfig.
    "fp16_flag": ("config.set_flag(trt.BuilderFlag.FP16)", False, True, True),
    "10x_device_memory": ("n: int = engine.device_memory_size", False, True, True),
    "renamed_v2_memory": ("n: int = engine.device_memory_size_v2", False, False, False),
    "wrong_argument": ("config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 'lots')", True, True, True),
    "rtx_targets_on_trt": ("config.num_compute_capabilities = 2", True, True, False),
    "rtx_targets": ("rtx_config.num_compute_capabilities = 2", False, False, False),
    "rtx_has_no_hopper": ("rtx_config.set_compute_capability(tensorrt_rtx.ComputeCapability.SM90, 0)",
                          True, True, True),
}


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_the_check_catches_real_mistakes(configuration, tmp_path, mistake):
    code, on_10, on_11, on_rtx = MISTAKES[mistake]
    (tmp_path / "snippet.py").write_text(textwrap.dedent(f"""\
        import tensorrt as trt
        import tensorrt_rtx
        def f(config: trt.IBuilderConfig, engine: trt.ICudaEngine, rtx_config: tensorrt_rtx.IBuilderConfig) -> None:
            {code}
        """))
    result = mypy(configuration, str(tmp_path / "snippet.py"))
    expected_error = {"rtx": on_rtx, VERSIONS[0]: on_10, VERSIONS[1]: on_11}[configuration]
    assert (result.returncode != 0) == expected_error, result.stdout + result.stderr


def probe(env: dict[str, str], onnx_path: Path, target: str = "tensorrt") -> dict:
    result = subprocess.run([sys.executable, str(ROOT / "tests" / "trt_api_probe.py"), str(onnx_path), target],
                            cwd=ROOT, env={**env, "PYTHONPATH": os.pathsep.join(
                                p for p in (env.get("PYTHONPATH"), str(ROOT)) if p)},
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def assert_subclasses_work(r: dict) -> None:
    """Our ILogger / IProgressMonitor / IStreamWriter subclasses are real subclasses of the bindings' classes,
    and they behave: cancel, error collection, warnings shown and verbose lines not."""
    assert r["monitor_is_progress_monitor"] and r["logger_is_ilogger"]
    assert r["writer_is_stream_writer"] and r["writer_wrote"] == 3
    assert r["step_before_cancel"] is True and r["step_after_cancel"] is False
    assert r["logged_errors"] == ["an error"]
    assert any("[TensorRT] a warning" in line for line in r["lines"])
    assert not any("verbose detail" in line for line in r["lines"])


def test_api_level_flag_selection_and_subclasses(bindings, tmp_path):
    """API-level (real bindings, stand-in libraries): flags are found by name and their values differ
    between the majors, so nothing may hard-code them; our ILogger / IProgressMonitor subclasses are real."""
    onnx_path = tmp_path / "m.onnx"
    onnx_path.write_bytes(b"")
    r = probe(bindings.env, onnx_path)
    eleven = r["major"] == 11
    assert r["version"] == bindings.version
    assert r["weak_typing"] is (not eleven)
    assert r["network_flags"] == 1 << r["strongly_typed_bit"] == (1 if eleven else 2)
    assert r["flags"]["version_compatible"] == ["VERSION_COMPATIBLE", 12 if eleven else 13]
    assert r["flags"]["strip_plan"] == ["STRIP_PLAN", 18 if eleven else 19]
    assert r["flags"]["weight_streaming"] == ["WEIGHT_STREAMING", 20 if eleven else 21]
    assert r["flags"]["refittable"][0] == "REFIT"
    if eleven:
        assert "needs BuilderFlag.FP16, which TensorRT 11.4.0.106 does not have" in r["flags"]["fp16_weak"]
    else:
        assert r["flags"]["fp16_weak"] == ["FP16", 0]
    assert_subclasses_work(r)
    assert any("Tactic selection (10 steps)" in line for line in r["lines"])
    assert r["dtype_names"]["HALF"] == "float16" and r["dtype_names"]["BF16"] == "bfloat16"
    assert r["dtype_names"]["FLOAT"] == "float32" and r["dtype_names"]["INT64"] == "int64"
    # With stand-in libraries the builder factory returns NULL: the build path reports it as a BuildError.
    assert r["build"].startswith(f"TensorRT {bindings.version} could not create a builder")
    # The runtime session, with the full bindings and with the lean runtime alone (version-compatible plans).
    rt = r["runtime"]
    assert rt["full"] == ["tensorrt", "TensorRT could not create a runtime ()"]
    assert rt["lean"] == ["tensorrt_lean", "TensorRT could not create a runtime ()"]
    assert "TensorRT is not installed" in rt["lean_only_non_vc"]


def test_api_level_probe_with_the_real_tensorrt_rtx(tmp_path):
    """API-level (the real TensorRT-RTX, no stand-ins: it imports and builds without a GPU): our flag selection
    through select("rtx"), the logger / progress-monitor subclasses, the compute capabilities set on a real
    builder config, and the build path up to TensorRT-RTX's own refusal of an empty network. No engine is built
    or run."""
    rtx = rtx_stubs()
    onnx_path = tmp_path / "m.onnx"
    onnx_path.write_bytes(b"")
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    r = probe(env, onnx_path, "rtx")
    assert r["module"] == "tensorrt_rtx" and r["version"] == rtx.version and r["major"] == 1
    assert r["label"] == f"TensorRT-RTX {rtx.version}" and r["plan_tag"] == "rtx" + ".".join(rtx.version.split(".")[:2])
    assert r["weak_typing"] is False
    assert r["network_flags"] == 1 << r["strongly_typed_bit"]
    assert r["flags"]["weight_streaming"][0] == "WEIGHT_STREAMING"
    assert r["flags"]["strip_plan"][0] == "STRIP_PLAN" and r["flags"]["refittable"][0] == "REFIT"
    assert f"needs BuilderFlag.FP16, which TensorRT {rtx.version} does not have" in r["flags"]["fp16_weak"]
    assert_subclasses_work(r)
    assert r["dtype_names"]["HALF"] == "float16" and r["dtype_names"]["BF16"] == "bfloat16"
    # apply_rtx on a real builder config: the targets it was given, by ComputeCapability member.
    assert r["compute_capabilities"] == ["SM86", "SM89"]
    # The builder exists without a GPU; the build path runs through the whole configuration (targets, timing
    # cache, flags, progress monitor) until TensorRT-RTX refuses the empty network.
    assert r["build"].startswith(f"TensorRT-RTX {rtx.version} could not build the engine"), r["build"]
    # The runtime session of an RTX plan uses tensorrt_rtx; the empty "plan" does not deserialize.
    assert r["runtime"]["full"][0] == "tensorrt_rtx"
    assert r["runtime"]["full"][1].startswith("TensorRT could not load m.onnx")


def test_run_cli_with_bindings_but_no_gpu(bindings, tmp_path):
    """ptdit-run on a plan with TensorRT importable and no GPU: one line, exit 2."""
    from conftest import fake_plan

    plan = fake_plan(tmp_path, trt_version=bindings.version)
    result = subprocess.run([sys.executable, "-m", "runtime", str(plan), "--random-text",
                             "--out", str(tmp_path / "l.npy")], cwd=ROOT,
                            env={**bindings.env, "PYTHONPATH": f"{bindings.env['PYTHONPATH']}:{ROOT}"},
                            capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("ptdit-run: error: no CUDA GPU is visible")
    assert not (tmp_path / "l.npy").exists()


def test_build_cli_with_bindings_but_no_gpu(bindings, tmp_path):
    """ptdit-build with TensorRT importable and no GPU: one line, exit 2, nothing written."""
    from conftest import artifact_copy

    onnx_path = artifact_copy(tmp_path, "fp16")
    before = sorted(p.name for p in tmp_path.iterdir())
    result = subprocess.run([sys.executable, "-m", "engines", str(onnx_path)], cwd=ROOT,
                            env={**bindings.env, "PYTHONPATH": f"{bindings.env['PYTHONPATH']}:{ROOT}"},
                            capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("ptdit-build: error: no CUDA GPU is visible")
    assert sorted(p.name for p in tmp_path.iterdir()) == before
