"""Static API conformance of engines/ (and the TensorRT parts of runtime/) against stubs generated from the
real TensorRT 10.13 and 11.4 bindings, plus API-level probes with those bindings imported on this GPU-less
machine. Nothing here builds or runs an engine."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import trt_stubs

ROOT = Path(__file__).resolve().parent.parent
VERSIONS = ["10.13.3.9", "11.4.0.106"]
TRT_CODE = ["engines", "runtime"]


@pytest.fixture(scope="session", params=VERSIONS)
def bindings(request) -> trt_stubs.Bindings:
    return trt_stubs.prepare(request.param)


def mypy(bindings: trt_stubs.Bindings, *targets: str) -> subprocess.CompletedProcess[str]:
    env = dict(bindings.env)
    env["MYPYPATH"] = str(bindings.stubs)
    env.pop("PYTHONPATH")  # types come from the stubs, not from the importable module
    return subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "setup.cfg"), "--no-incremental",
                           *targets], cwd=ROOT, env=env, capture_output=True, text=True)


def test_our_tensorrt_code_conforms(bindings):
    result = mypy(bindings, *TRT_CODE)
    assert result.returncode == 0, f"TensorRT {bindings.version}:\n{result.stdout}{result.stderr}"


def test_the_whole_project_type_checks():
    """All four packages (type hints are part of the code's contract); TensorRT types from the 11.4 stubs."""
    result = mypy(trt_stubs.prepare(VERSIONS[-1]), "ptdit", "export", "engines", "runtime")
    assert result.returncode == 0, result.stdout + result.stderr


MISTAKES = {
    # (code, error expected on 10.x, error expected on 11.x)
    "fp16_flag": ("config.set_flag(trt.BuilderFlag.FP16)", False, True),
    "10x_device_memory": ("n: int = engine.device_memory_size", False, True),
    "renamed_v2_memory": ("n: int = engine.device_memory_size_v2", False, False),
    "wrong_argument": ("config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 'lots')", True, True),
}


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_the_check_catches_real_mistakes(bindings, tmp_path, mistake):
    code, on_10, on_11 = MISTAKES[mistake]
    (tmp_path / "snippet.py").write_text(textwrap.dedent(f"""\
        import tensorrt as trt
        def f(config: trt.IBuilderConfig, engine: trt.ICudaEngine) -> None:
            {code}
        """))
    result = mypy(bindings, str(tmp_path / "snippet.py"))
    expected_error = on_11 if bindings.version.startswith("11.") else on_10
    assert (result.returncode != 0) == expected_error, result.stdout


def probe(bindings: trt_stubs.Bindings, onnx_path: Path) -> dict:
    result = subprocess.run([sys.executable, str(ROOT / "tests" / "trt_api_probe.py"), str(onnx_path)],
                            cwd=ROOT, env={**bindings.env, "PYTHONPATH": f"{bindings.env['PYTHONPATH']}:{ROOT}"},
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_api_level_flag_selection_and_subclasses(bindings, tmp_path):
    """API-level (real bindings, stand-in libraries): flags are found by name and their values differ
    between the majors, so nothing may hard-code them; our ILogger / IProgressMonitor subclasses are real."""
    onnx_path = tmp_path / "m.onnx"
    onnx_path.write_bytes(b"")
    r = probe(bindings, onnx_path)
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
    assert r["monitor_is_progress_monitor"] and r["logger_is_ilogger"]
    assert r["step_before_cancel"] is True and r["step_after_cancel"] is False
    assert r["logged_errors"] == ["an error"]
    assert any("[TensorRT] a warning" in line for line in r["lines"])
    assert not any("verbose detail" in line for line in r["lines"])
    assert any("Tactic selection (10 steps)" in line for line in r["lines"])
    assert r["dtype_names"]["HALF"] == "float16" and r["dtype_names"]["BF16"] == "bfloat16"
    assert r["dtype_names"]["FLOAT"] == "float32" and r["dtype_names"]["INT64"] == "int64"
    # With stand-in libraries the builder factory returns NULL: the build path reports it as a BuildError.
    assert r["build"].startswith("TensorRT could not create a builder")
    # The runtime session, with the full bindings and with the lean runtime alone (version-compatible plans).
    rt = r["runtime"]
    assert rt["full"] == ["tensorrt", "TensorRT could not create a runtime ()"]
    assert rt["lean"] == ["tensorrt_lean", "TensorRT could not create a runtime ()"]
    assert "TensorRT is not installed" in rt["lean_only_non_vc"]


def test_run_cli_with_bindings_but_no_gpu(bindings, tmp_path):
    """ptdit-run on a plan with TensorRT importable and no GPU: one line, exit 2."""
    from test_runtime import fake_plan

    plan = fake_plan(tmp_path, trt_version=bindings.version)
    result = subprocess.run([sys.executable, "-m", "runtime", "--artifact", str(plan), "--random-text",
                             "--out", str(tmp_path / "l.npy")], cwd=ROOT,
                            env={**bindings.env, "PYTHONPATH": f"{bindings.env['PYTHONPATH']}:{ROOT}"},
                            capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("ptdit-run: error: no CUDA GPU is visible")
    assert not (tmp_path / "l.npy").exists()


def test_build_cli_with_bindings_but_no_gpu(bindings, tmp_path):
    """ptdit-build with TensorRT importable and no GPU: one line, exit 2, nothing written."""
    from test_engines import exported

    onnx_path = exported(tmp_path, "fp16")
    before = sorted(p.name for p in tmp_path.iterdir())
    result = subprocess.run([sys.executable, "-m", "engines", str(onnx_path)], cwd=ROOT,
                            env={**bindings.env, "PYTHONPATH": f"{bindings.env['PYTHONPATH']}:{ROOT}"},
                            capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("ptdit-build: error: no CUDA GPU is visible")
    assert sorted(p.name for p in tmp_path.iterdir()) == before
