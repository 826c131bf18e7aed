"""The runtime on a CPU machine: sessions over ONNX Runtime and PyTorch, input checks, artifacts, the CUDA
layer's error path, the TensorRT session's compatibility rules, and ptdit-run end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import artifact_copy, fake_plan
from ptdit.contract.errors import InputError
from ptdit.contract.plan_manifest import BuilderInfo, BuildOptions, Targets
from runtime.artifact import load_artifact
from runtime.backends.tensorrt import cuda
from runtime.backends.tensorrt.flavour import check_compatible
from runtime.cli.run import main as run_main
from runtime.session import open_session, require

RTX_DEFAULT = ("8.0", "8.6", "8.9", "12.0", "12.1")  # engines.targets.RTX_DEFAULT (runtime tests import no engines)

ROOT = Path(__file__).resolve().parents[2]




def feeds(path: Path, seed: int = 0) -> dict[str, np.ndarray]:
    manifest = json.loads(path.with_suffix(".json").read_text())
    rng = np.random.default_rng(seed)
    shapes = {t["name"]: t["shape"] for t in manifest["inputs"]}
    mask = np.ones(shapes["text_mask"], dtype=np.int64)
    mask[1, 50:] = 0
    return {"latent": rng.standard_normal(shapes["latent"], dtype=np.float32),
            "timestep": np.array([900.0, 900.0], dtype=np.float32),
            "text_embeds": rng.standard_normal(shapes["text_embeds"], dtype=np.float32), "text_mask": mask}


@pytest.mark.parametrize("precision,tolerance", [("fp32", 1e-5), ("fp16", 1e-2), ("bf16", 5e-2)])
def test_onnxruntime_and_torch_sessions_agree(tmp_path, precision, tolerance):
    path = artifact_copy(tmp_path, precision)
    outputs = {}
    for backend in ("onnxruntime", "torch"):
        session = open_session(str(path), backend, "cpu")
        session.set_inputs(feeds(path))
        outputs[backend] = session.run()["noise_pred"]
        session.close()
    ort_out, torch_out = outputs["onnxruntime"], outputs["torch"]
    assert ort_out.shape == (2, 8, 32, 32) and ort_out.dtype == np.float32
    rel = np.linalg.norm(ort_out - torch_out) / np.linalg.norm(torch_out)
    assert rel < tolerance


def test_inputs_are_kept_between_runs_and_checked(tmp_path):
    path = artifact_copy(tmp_path)
    session = open_session(str(path), "onnxruntime", "cpu")
    f = feeds(path)
    with pytest.raises(InputError,
                       match=r"input\(s\) \['latent', 'text_embeds', 'text_mask', 'timestep'\] were never set"):
        session.run()
    session.set_inputs({"text_embeds": f["text_embeds"], "text_mask": f["text_mask"].astype(bool)})  # bool mask is fine
    session.set_inputs({"latent": f["latent"], "timestep": f["timestep"]})
    first = session.run()["noise_pred"]
    session.set_inputs({"timestep": np.array([10.0, 10.0], np.float32)})
    assert not np.allclose(session.run()["noise_pred"], first)
    session.set_inputs({"timestep": f["timestep"]})
    np.testing.assert_array_equal(session.run()["noise_pred"], first)
    for bad, message in [
        ({"latent": f["latent"][:1]},
         r"input 'latent' has shape \[1, 4, 32, 32\], the artifact needs \[2, 4, 32, 32\]"),
        ({"latent": f["latent"].astype(np.float64)}, "input 'latent' is float64, the artifact needs float32"),
        ({"text_mask": f["text_mask"].astype(np.float32)}, "input 'text_mask' is float32, the artifact needs int64"),
        ({"noise": f["latent"]}, r"unknown input\(s\) \['noise'\]"),
    ]:
        with pytest.raises(InputError, match=message):
            session.set_inputs(bad)
    session.close()


def test_torch_tensors_are_accepted_through_dlpack(tmp_path):
    path = artifact_copy(tmp_path)
    session = open_session(str(path), "onnxruntime", "cpu")
    f = feeds(path)
    session.set_inputs(f)
    expected = session.run()["noise_pred"]
    session.set_inputs({k: torch.from_numpy(v) for k, v in f.items()})
    np.testing.assert_array_equal(session.run()["noise_pred"], expected)


@pytest.mark.parametrize(
    "setup,message",
    [
        ("no_manifest", "has no manifest"),
        ("foreign_manifest", "is not the manifest of this .onnx"),
        ("corrupt_file", "does not match its manifest"),
        ("wrong_suffix", "is neither an .onnx nor a .plan"),
        ("missing", "does not exist"),
    ],
)
def test_artifact_errors(tmp_path, setup, message):
    path = artifact_copy(tmp_path)
    if setup == "no_manifest":
        path.with_suffix(".json").unlink()
    elif setup == "foreign_manifest":
        path.with_suffix(".json").write_text('{"schema": "ptdit-plan/2"}')
    elif setup == "corrupt_file":
        path.write_bytes(path.read_bytes()[:-10])
    elif setup == "wrong_suffix":
        path = path.with_suffix(".bin")
        path.write_bytes(b"")
    elif setup == "missing":
        path = tmp_path / "absent.onnx"
    with pytest.raises(InputError, match=message):
        load_artifact(path)


def test_a_corrupt_onnx_without_verification_is_still_refused(tmp_path):
    path = artifact_copy(tmp_path)
    path.write_bytes(b"garbage")  # the project's own check reads it before ONNX Runtime does
    with pytest.raises(InputError, match=r"ptdit-tiny-256-b2-fp32.onnx is not an ONNX model \(DecodeError: .*\): pass "
                                         r"an ONNX written by ptdit-export$"):
        open_session(str(path), "onnxruntime", "cpu", verify=False)




def test_backend_selection(tmp_path):
    onnx_path = artifact_copy(tmp_path)
    with pytest.raises(InputError, match="the tensorrt backend runs .plan files; build one with ptdit-build"):
        open_session(str(onnx_path), "tensorrt")
    plan = fake_plan(tmp_path)
    with pytest.raises(InputError, match="the onnxruntime backend runs .onnx files"):
        open_session(str(plan), "onnxruntime")
    with pytest.raises(InputError, match="unknown backend 'tvm'"):
        open_session(str(onnx_path), "tvm")
    with pytest.raises(InputError, match="somepackage_that_is_absent is not installed: pip install it"):
        require("somepackage_that_is_absent", "pip install it")


@pytest.mark.skipif(__import__("importlib").util.find_spec("tensorrt") is not None, reason="TensorRT is installed")
def test_a_plan_without_tensorrt(tmp_path):
    with pytest.raises(InputError, match="TensorRT is not installed: pip install --extra-index-url"):
        open_session(str(fake_plan(tmp_path)))


def test_torch_backend_rebuilds_the_model_from_the_manifest(tmp_path):
    from ptdit import PTDiT, preset, save_checkpoint

    save_checkpoint(PTDiT(preset("tiny"), seed=11), tmp_path / "w.safetensors")
    path = artifact_copy(tmp_path, "fp32", extra=("--checkpoint", str(tmp_path / "w.safetensors"), "--proxy", "mean"))
    ort_session, torch_session = open_session(str(path), "onnxruntime", "cpu"), open_session(str(path), "torch", "cpu")
    for s in (ort_session, torch_session):
        s.set_inputs(feeds(path))
    np.testing.assert_allclose(ort_session.run()["noise_pred"], torch_session.run()["noise_pred"], rtol=1e-4, atol=1e-4)
    manifest = json.loads(path.with_suffix(".json").read_text())
    manifest["model"]["weights"]["path"] = str(tmp_path / "elsewhere.safetensors")
    path.with_suffix(".json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="are not available here"):
        open_session(str(path), "torch", "cpu", verify=False)


@pytest.mark.parametrize(
    "built,running,vc,ok",
    [("10.13.3.9", "10.13.3.9", False, True), ("10.13.3.9", "10.13.2.6", False, False),
     ("10.13.3.9", "11.4.0.106", False, False), ("10.13.3.9", "11.4.0.106", True, True),
     ("11.4.0.106", "10.13.3.9", True, False), ("10.8.0.43", "10.13.3.9", True, True)],
)
def test_plan_compatibility_rules(built, running, vc, ok):
    plan = (BuilderInfo("tensorrt", "tensorrt", built, True), BuildOptions(version_compatible=vc),
            Targets(("9.0",), "build GPU"))
    if ok:
        check_compatible(*plan, running, "NVIDIA H100", "9.0")
    else:
        with pytest.raises(InputError, match=f"built with TensorRT {built}; this machine runs TensorRT {running}: "
                                             f"rebuild it here with ptdit-build"):
            check_compatible(*plan, running, "NVIDIA H100", "9.0")
    same_version = (BuilderInfo("tensorrt", "tensorrt", running, True), *plan[1:])
    with pytest.raises(InputError, match=r"built for compute capability 9.0; this GPU is NVIDIA L4 \(8.9\): rebuild"):
        check_compatible(*same_version, running, "NVIDIA L4", "8.9")


@pytest.mark.parametrize(
    "targets,cc,ok",
    [((["8.9"], "--compute-capability"), "8.9", True), ((["8.9"], "--compute-capability"), "8.6", False),
     ((["8.6", "12.0"], "--compute-capability"), "12.0", True),
     ((["8.6", "12.0"], "--compute-capability"), "9.0", False),
     ((list(RTX_DEFAULT), "TensorRT-RTX default"), "8.0", True),
     ((list(RTX_DEFAULT), "TensorRT-RTX default"), "12.3", True),
     ((list(RTX_DEFAULT), "TensorRT-RTX default"), "9.0", False),
     ((list(RTX_DEFAULT), "TensorRT-RTX default"), "7.5", False)],
)
def test_rtx_plans_run_on_the_compute_capabilities_they_target(targets, cc, ok):
    ccs, source = targets
    plan = (BuilderInfo("rtx", "tensorrt_rtx", "1.7.1.116", True), BuildOptions(), Targets(tuple(ccs), source))
    if ok:
        check_compatible(*plan, "1.7.1.116", "GPU", cc)
    else:
        with pytest.raises(InputError,
                           match=f"built for compute capability {', '.join(ccs)}; this GPU is GPU \\({cc}\\)"):
            check_compatible(*plan, "1.7.1.116", "GPU", cc)
    with pytest.raises(InputError, match="built with TensorRT-RTX 1.7.1.116; this machine runs TensorRT-RTX 1.8.0.1"):
        check_compatible(*plan, "1.8.0.1", "GPU", ccs[0])


@pytest.mark.parametrize(
    "options,run_args,message",
    [
        ({"vc": True, "exclude_lean_runtime": True}, [], "built with --exclude-lean-runtime: it runs only with the "
                                                         "lean runtime of the TensorRT that built it (10.13.3.9) "
                                                         "loaded: pass --lean-runtime"),
        ({}, ["--lean-runtime", "{tmp}/libnvinfer_lean.so.10"], "--lean-runtime is for version-compatible plans"),
        ({"vc": True, "exclude_lean_runtime": True}, ["--lean-runtime", "{tmp}/absent.so"], "does not exist"),
        ({}, ["--weight-budget", "2G"], "--weight-budget needs a plan built with --weight-streaming"),
        ({"weight_streaming": True}, ["--weight-budget", "0"], "'0' is not a positive byte count"),
        ({"strip_plan": True}, [], "is weightless (built with --strip-plan) and is refit from the ONNX it was built "
                                   "from at load, but"),
    ],
)
def test_what_a_plan_needs_from_the_run_is_checked_first(tmp_path, options, run_args, message):
    """Before TensorRT or CUDA is touched (this machine has neither a GPU nor full TensorRT)."""
    plan = fake_plan(tmp_path, **{"vc": options.pop("vc", False)}, **options)
    (tmp_path / "ptdit-tiny-256-b2-fp32.onnx").unlink()  # the ONNX a weightless plan would be refit from
    (tmp_path / "libnvinfer_lean.so.10").write_bytes(b"")
    code, _, stderr = run_cli(str(plan), "--random-text", "--out", str(tmp_path / "x.npy"),
                              *[a.format(tmp=tmp_path) for a in run_args])
    assert code == 2 and message in stderr, stderr
    assert not (tmp_path / "x.npy").exists()


@pytest.mark.parametrize("command", [["ptdit-diff", "{plan}", "--steps", "0"],
                                     [sys.executable, "-m", "runtime.bench", "{plan}", "--latency",
                                      "tensorrt"]])
def test_the_plan_options_reach_the_session_from_every_command(tmp_path, command):
    """ptdit-diff and the runtime benchmark take --weight-budget (and --lean-runtime, --runtime-cache-dir) to the
    TensorRT session: its refusal of a budget for a plan without weight streaming comes back as one line."""
    plan = fake_plan(tmp_path)
    result = subprocess.run([a.format(plan=plan) for a in command] + ["--weight-budget", "2G"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert "--weight-budget needs a plan built with --weight-streaming" in result.stderr.strip().splitlines()[-1]


def test_byte_sizes():
    from ptdit.contract.cli_types import ByteSize

    assert [ByteSize().convert(v, None, None) for v in ("1024", "512M", "2G", "1.5GiB", "64k")] == \
        [1024, 512 << 20, 2 << 30, 3 << 29, 64 << 10]
    for bad in ("lots", "0", "-1G", "nan", "inf"):
        with pytest.raises(click.BadParameter, match="is not a positive byte count"):
            ByteSize().convert(bad, None, None)


@pytest.mark.skipif(__import__("importlib").util.find_spec("tensorrt_rtx") is not None,
                    reason="TensorRT-RTX is installed")
def test_an_rtx_plan_without_tensorrt_rtx(tmp_path):
    with pytest.raises(InputError,
                       match="built with TensorRT-RTX, which is not installed: pip install tensorrt-rtx-cu13"):
        open_session(str(fake_plan(tmp_path, "1.7.1.116", "8.9", target="rtx")))


@pytest.mark.skipif(cuda.cudart().cudaGetDeviceCount()[0] == cuda.cudart().cudaError_t.cudaSuccess,
                    reason="a GPU is visible")
def test_cuda_layer_names_the_failing_call_and_error():
    with pytest.raises(cuda.CudaError,
                       match=r"cudaMalloc failed: cudaErrorInsufficientDriver \(CUDA driver version is"):
        cuda.DeviceBuffer(1024)
    with pytest.raises(InputError, match="no CUDA GPU is visible .*use backend='onnxruntime' or backend='torch'"):
        cuda.current_device()


def run_cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(run_main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("suffix", [".npy", ".safetensors"])
def test_ptdit_run_writes_latents(tmp_path, suffix):
    path = artifact_copy(tmp_path, "fp16")
    out = tmp_path / f"latents{suffix}"
    code, stdout, stderr = run_cli(str(path), "--random-text", "--steps", "3", "--out", str(out), "--json", "-v")
    assert code == 0, stderr
    assert stderr.count("  sampling: step ") == 3 and "sampling: step 3/3  t=" in stderr
    summary = json.loads(stdout)
    assert summary["steps"] == 3 and summary["backend"] == "onnxruntime (CPUExecutionProvider)"
    if suffix == ".npy":
        latent = np.load(out)
    else:
        from safetensors import safe_open

        with safe_open(str(out), "np") as f:
            latent = f.get_tensor("latent")
            assert f.metadata()["seed"] == "0" and f.metadata()["steps"] == "3"
    assert latent.shape == (1, 4, 32, 32) and np.isfinite(latent).all()


def test_ptdit_run_text_from_a_file(tmp_path):
    path = artifact_copy(tmp_path, "fp32")
    rng = np.random.default_rng(3)
    np.save(tmp_path / "cond.npy", rng.standard_normal((200, 4096), dtype=np.float32))
    np.savez(tmp_path / "neg.npz", text_embeds=rng.standard_normal((1, 200, 4096), dtype=np.float32),
             text_mask=(np.arange(200) < 5).astype(np.int64))
    code, _, stderr = run_cli(str(path), "--text", str(tmp_path / "cond.npy"), "--negative-text",
                              str(tmp_path / "neg.npz"), "--steps", "2", "--out", str(tmp_path / "l.npy"))
    assert code == 0, stderr
    np.save(tmp_path / "short.npy", np.zeros((77, 4096), np.float32))
    code, _, stderr = run_cli(str(path), "--text", str(tmp_path / "short.npy"), "--out",
                              str(tmp_path / "m.npy"))
    assert code == 2 and "export with ptdit-export --text-len 77" in stderr


@pytest.mark.parametrize(
    "args,message",
    [
        (["--random-text", "--out", "{tmp}/exists.npy"], "already exists; pass --force"),
        (["--random-text", "--out", "{tmp}/x.png"], "--out must end in .npy or .safetensors"),
        (["--out", "{tmp}/x.npy"], "no text features: pass --text (a features file), --random-text"),
        (["--random-text", "--text", "{tmp}/t.npy", "--out", "{tmp}/x.npy"], "not both"),
        (["--text", "{tmp}/absent.npy", "--out", "{tmp}/x.npy"], "does not exist"),
        (["--text", "{tmp}/nan.npy", "--out", "{tmp}/x.npy"], "hold 1 NaN or infinite values"),
        (["--random-text", "--negative-text", "{tmp}/nan.npy", "--out", "{tmp}/x.npy"], "not both"),
        (["--text", "{tmp}/t.npy", "--negative-text", "{tmp}/nan.npy", "--out", "{tmp}/x.npy"],
         "hold 1 NaN or infinite values"),
        (["--random-text", "--backend", "tensorrt", "--out", "{tmp}/x.npy"], "the tensorrt backend runs .plan files"),
    ],
)
def test_ptdit_run_bad_input(tmp_path, args, message):
    path = artifact_copy(tmp_path)
    (tmp_path / "exists.npy").write_bytes(b"")
    np.save(tmp_path / "t.npy", np.zeros((200, 4096), np.float32))
    nan = np.zeros((200, 4096), np.float32)
    nan[7, 9] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    before = sorted(p.name for p in tmp_path.iterdir())
    code, _, stderr = run_cli(str(path), *[a.format(tmp=tmp_path) for a in args])
    assert code == 2, stderr
    assert message in stderr and stderr.strip().splitlines()[-1].startswith("ptdit-run: error:")
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_non_finite_text_is_refused_before_the_session_opens(tmp_path, monkeypatch):
    """NaN / inf features: exit 2 before any work (the session, the expensive part, is never opened)."""
    import runtime.session

    def no_session(*args, **kwargs):
        raise AssertionError("the session was opened")

    monkeypatch.setattr(runtime.session, "open_session", no_session)
    inf = np.zeros((200, 4096), np.float32)
    inf[0, 0] = np.inf
    np.save(tmp_path / "inf.npy", inf)
    code, _, stderr = run_cli(str(tmp_path / "any.onnx"), "--text", str(tmp_path / "inf.npy"),
                              "--out", str(tmp_path / "x.npy"))
    assert code == 2 and "hold 1 NaN or infinite values" in stderr
    from runtime.sampling.text import make_conditioning

    with pytest.raises(InputError, match="the features of negative_text hold 1 NaN"):
        make_conditioning(200, 4096, (np.zeros((1, 200, 4096), np.float32), np.ones((1, 200), np.int64)),
                          (inf[None], np.ones((1, 200), np.int64)))


def test_ptdit_run_console_script_and_light_imports():
    help_text = subprocess.run(["ptdit-run", "--help"], capture_output=True, text=True, check=True).stdout
    assert "Examples:" in help_text and "--prompt" in help_text and "a pipeline folder" in help_text
    probe = ("import sys, runtime.cli.run, runtime.cli.diff, runtime.session, runtime.sampling.host_loop, "
             "runtime.sampling.step_sampler, runtime.backends.tensorrt.session, runtime.backends.tensorrt.cuda, "
             "runtime.pipeline.text_to_image, runtime.pipeline.prompt, runtime.diff.artifact_diff; "
             "print(sorted(m for m in sys.modules if m in ('torch', 'onnxruntime', 'tensorrt') "
             "or m.startswith('ptdit.') and not m.startswith('ptdit.contract')))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT).stdout
    assert loaded.strip() == "[]"


def test_overhead_benchmark_runs(tmp_path):
    """The benchmark measures (no timing is asserted: speed is reported by the benchmark, not tested)."""
    from runtime.bench import measure_overhead

    result = measure_overhead(artifact_copy(tmp_path, "fp16"), steps=2, rounds=2)
    assert result["calls"] == 4 and result["bare_run_ms"] > 0 and result["sampler_step_ms"] > 0
    assert result["overhead_ratio"] == pytest.approx(result["sampler_step_ms"] / result["bare_run_ms"] - 1, abs=1e-3)
