"""ptdit-export through its real entry point, on the tiny preset."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

from export.cli import main
from ptdit import PTDiT, preset, save_checkpoint


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def one_error_line(stderr: str) -> bool:
    """The error is a single line, the last one, and no traceback is shown."""
    lines = stderr.strip().splitlines()
    return bool(lines) and lines[-1].startswith("ptdit-export: error: ") and \
        sum("error:" in line for line in lines) == 1 and "Traceback" not in stderr


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def ort_run(path: Path, manifest: dict, seed: int = 1) -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for t in manifest["inputs"]:
        if t["dtype"] == "int64":
            feeds[t["name"]] = np.ones(t["shape"], dtype=np.int64)
        elif t["name"] == "timestep":
            feeds[t["name"]] = np.full(t["shape"], 500.0, dtype=np.float32)
        else:
            feeds[t["name"]] = rng.standard_normal(t["shape"], dtype=np.float32)
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    return feeds, out


@pytest.fixture(scope="module")
def fp16_artifact(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fp16")
    code, stdout, stderr = run("--preset", "tiny", "--res", "256", "--out", str(out))
    assert code == 0, stderr
    assert "wrote" in stdout and "checks passed" in stdout
    return out / "ptdit-tiny-256-b2-fp16.onnx"


def test_artifact_and_manifest(fp16_artifact):
    manifest = json.loads(fp16_artifact.with_suffix(".json").read_text())
    assert manifest["schema"] == "ptdit-onnx/1"
    assert [t["name"] for t in manifest["inputs"]] == ["latent", "timestep", "text_embeds", "text_mask"]
    assert manifest["inputs"][0] == {"name": "latent", "shape": [2, 4, 32, 32], "dtype": "float32"}
    assert manifest["inputs"][3] == {"name": "text_mask", "shape": [2, 200], "dtype": "int64"}
    assert manifest["outputs"] == [{"name": "noise_pred", "shape": [2, 8, 32, 32], "dtype": "float32"}]
    assert manifest["geometry"]["window"] == [1, 2, 2] and manifest["geometry"]["proxy_mode"] == "strided"
    from ptdit.checkpoint import state_dict_sha256

    expected = state_dict_sha256(PTDiT(preset("tiny"), seed=0).half())
    assert manifest["model"]["weights"] == {"source": "seeded", "seed": 0, "state_dict_sha256": expected}
    assert manifest["export"]["precision"] == "fp16" and manifest["export"]["opset"] == 18
    checks = manifest["checks"]
    assert checks["level"] == ("full" if torch.cuda.is_available() else "fast")  # --checks auto
    parity_check = "onnxruntime_parity" if torch.cuda.is_available() else "onnxruntime_parity_first_block"
    assert all(checks[c]["passed"] for c in ("onnx_checker", "static_shapes", "no_random_ops", "tensorrt_ops",
                                             parity_check))
    assert checks["tensorrt_ops"]["max_rank"] == 8
    assert 0 < checks[parity_check]["vs_torch_fp32"]["rel_l2"] < 2e-2
    from ptdit.contract.files import file_sha256

    assert manifest["artifact"]["sha256"] == {fp16_artifact.name: file_sha256(fp16_artifact)}
    assert manifest["artifact"]["external_data"] is None


def test_graph_is_low_precision_with_fp32_islands(fp16_artifact):
    model = onnx.load(str(fp16_artifact))
    weights = {i.name: i.data_type for i in model.graph.initializer}
    assert weights["transformer_blocks.0.attn1.to_q.weight"] == onnx.TensorProto.FLOAT16
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    norms = [n for n in model.graph.node if n.op_type == "LayerNormalization"]
    assert norms and all(types[n.input[0]] == onnx.TensorProto.FLOAT for n in norms)
    sinusoids = [n for n in model.graph.node if n.op_type in ("Sin", "Cos")]
    assert sinusoids and all(types[n.input[0]] == onnx.TensorProto.FLOAT for n in sinusoids)
    matmuls = [n for n in model.graph.node if n.op_type == "MatMul"]
    assert all(types.get(n.output[0]) == onnx.TensorProto.FLOAT16 for n in matmuls)


def test_attention_is_matmul_softmax_matmul_with_scaled_q_and_k(fp16_artifact):
    graph = onnx.load(str(fp16_artifact)).graph
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    softmaxes = [n for n in graph.node if n.op_type == "Softmax"]
    assert len(softmaxes) == 2 * 5  # five attentions per block
    for sm in softmaxes:
        scores = producer[sm.input[0]]
        if scores.op_type == "Add":  # additive mask
            scores = producer[scores.input[0]]
        assert scores.op_type == "MatMul"
        assert {producer[i].op_type for i in scores.input} == {"Mul"}  # scale folded into Q and K
        assert [c.op_type for c in consumers[sm.output[0]]] == ["MatMul"]


def test_block_outputs_are_named_tensors(fp16_artifact):
    manifest = json.loads(fp16_artifact.with_suffix(".json").read_text())
    names = manifest["block_outputs"]["names"]
    assert names == ["block_00", "block_01"]
    produced = {o for n in onnx.load(str(fp16_artifact)).graph.node for o in n.output}
    assert set(names) <= produced
    assert manifest["block_outputs"]["shape"] == [2, 64, 4, 64]


@pytest.mark.parametrize("precision,max_rel", [("fp32", 1e-5), ("bf16", 1e-1)])
def test_other_precisions(tmp_path, precision, max_rel):
    code, _, stderr = run("--preset", "tiny", "--res", "256", "--precision", precision, "--out", str(tmp_path),
                          "--checks", "full")
    assert code == 0, stderr
    manifest = json.loads((tmp_path / f"ptdit-tiny-256-b2-{precision}.json").read_text())
    parity = manifest["checks"]["onnxruntime_parity"]
    assert parity["vs_torch_fp32"]["rel_l2"] <= max_rel
    assert parity["bf16_emulated"] == (precision == "bf16")


def test_several_resolutions_and_ort_matches_torch(tmp_path):
    code, _, stderr = run("--preset", "tiny", "--res", "256", "--res", "512", "--precision", "fp32",
                          "--out", str(tmp_path), "--skip-checks")
    assert code == 0, stderr
    # several sizes: the weights are stored once, in a weights file the graphs share
    [shared] = [name for name in files_in(tmp_path) if name.endswith(".onnx.data")]
    assert shared.startswith("ptdit-tiny-b2-fp32-weights-")
    assert files_in(tmp_path) == ["ptdit-tiny-256-b2-fp32.json", "ptdit-tiny-256-b2-fp32.onnx",
                                  "ptdit-tiny-512-b2-fp32.json", "ptdit-tiny-512-b2-fp32.onnx", shared]
    path = tmp_path / "ptdit-tiny-512-b2-fp32.onnx"
    manifest = json.loads(path.with_suffix(".json").read_text())
    assert manifest["checks"] == {"skipped": True}
    assert manifest["artifact"]["external_data"] == shared
    parameter_bytes = 4 * manifest["model"]["parameters"]
    assert parameter_bytes < (tmp_path / shared).stat().st_size < 1.25 * parameter_bytes
    feeds, out = ort_run(path, manifest)
    with torch.no_grad():
        ref = PTDiT(preset("tiny")).eval()(*(torch.from_numpy(feeds[k]) for k in
                                             ("latent", "timestep", "text_embeds", "text_mask")))
    np.testing.assert_allclose(out, ref.numpy(), rtol=1e-4, atol=1e-4)


def test_video_export(tmp_path):
    code, _, stderr = run("--preset", "tiny", "--res", "256", "--frames", "4", "--out", str(tmp_path))
    assert code == 0, stderr
    path = tmp_path / "ptdit-tiny-256-f4-b2-fp16.onnx"
    manifest = json.loads(path.with_suffix(".json").read_text())
    assert manifest["inputs"][0]["shape"] == [2, 4, 4, 32, 32]
    assert manifest["geometry"]["window"] == [4, 2, 2]
    _, out = ort_run(path, manifest)
    assert out.shape == (2, 8, 4, 32, 32) and np.isfinite(out).all()


def test_exports_are_deterministic(tmp_path):
    for d in ("a", "b"):
        code, _, stderr = run("--preset", "tiny", "--res", "256", "--out", str(tmp_path / d))
        assert code == 0, stderr
    for name in files_in(tmp_path / "a"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_checkpoint_and_mean_proxies(tmp_path):
    model = PTDiT(preset("tiny"), seed=5)
    save_checkpoint(model, tmp_path / "w.safetensors")
    code, _, stderr = run("--preset", "tiny", "--res", "256", "--precision", "fp32", "--proxy", "mean",
                          "--checkpoint", str(tmp_path / "w.safetensors"), "--out", str(tmp_path / "out"))
    assert code == 0, stderr
    path = tmp_path / "out" / "ptdit-tiny-256-b2-fp32.onnx"
    manifest = json.loads(path.with_suffix(".json").read_text())
    from ptdit.contract.files import file_sha256

    assert manifest["model"]["weights"]["sha256"] == file_sha256(tmp_path / "w.safetensors")
    assert manifest["geometry"]["proxy_mode"] == "mean"
    assert "ReduceMean" in manifest["checks"]["tensorrt_ops"]["ops"]
    feeds, out = ort_run(path, manifest)
    with torch.no_grad():
        ref = PTDiT(preset("tiny").replace(proxy_mode="mean"), seed=5).eval()(
            *(torch.from_numpy(feeds[k]) for k in ("latent", "timestep", "text_embeds", "text_mask")))
    np.testing.assert_allclose(out, ref.numpy(), rtol=1e-4, atol=1e-4)


def test_force_overwrites_and_existing_output_is_refused(tmp_path):
    args = ["--preset", "tiny", "--res", "256", "--precision", "fp32", "--out", str(tmp_path), "--skip-checks"]
    assert run(*args)[0] == 0
    before = (tmp_path / "ptdit-tiny-256-b2-fp32.onnx").read_bytes()
    code, stdout, _ = run(*args)  # the same again: up to date, reused
    assert code == 0 and "up to date: " in stdout
    code, _, stderr = run(*args, "--seed", "3")  # other weights: stale, refused
    assert code == 2 and "(weights differ): it is stale and is not reused; pass --force" in stderr
    assert one_error_line(stderr)
    code, _, _ = run(*args, "--force", "--seed", "3")
    assert code == 0 and (tmp_path / "ptdit-tiny-256-b2-fp32.onnx").read_bytes() != before


@pytest.mark.parametrize(
    "args,message",
    [
        (["--res", "300"], "Invalid value for '--res'"),
        (["--res", "256", "--frames", "6"], "multiple of 4"),
        (["--res", "256", "--preset", "huge"], "Invalid value for '--preset'"),
        (["--res", "256", "--opset", "16"], "'16' is not an integer in [18, 23]"),
        (["--res", "256", "--checkpoint", "/nonexistent/w.pt"], "does not exist"),
        (["--res", "256", "--proxy-offset", "1,2"], "expected three integers"),
        (["--res", "256", "--proxy-offset", "0,5,0"], "outside the proxy window"),
        (["--res", "256", "--batch", "0"], "'0' is not an integer in [1, 64]"),
        (["--res", "256", "--config", "/nonexistent.json"], "does not exist"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "out"
    code, _, stderr = run(*(["--preset", "tiny"] if "--preset" not in args and "--config" not in args else []),
                          *args, "--out", str(out))
    assert code == 2, stderr
    assert message in stderr
    assert one_error_line(stderr) or "Usage:" in stderr  # click's own usage errors show the usage line
    assert not out.exists()  # not even the output directory


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without a GPU")
def test_torch_device_cuda_without_a_gpu(tmp_path):
    code, _, stderr = run("--preset", "tiny", "--res", "256", "--torch-device", "cuda", "--out", str(tmp_path))
    assert code == 2 and "needs a CUDA build of torch and a GPU" in stderr and one_error_line(stderr)
    assert files_in(tmp_path) == []


def test_unwritable_output_and_mismatched_checkpoint(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, stderr = run("--preset", "tiny", "--res", "256", "--out", str(blocker / "sub"))
    assert code == 2 and "cannot make the output directory" in stderr and "Not a directory" in stderr
    save_checkpoint(PTDiT(preset("tiny").replace(depth=1)), tmp_path / "d1.pt")
    code, _, stderr = run("--preset", "tiny", "--res", "256", "--checkpoint", str(tmp_path / "d1.pt"),
                          "--out", str(tmp_path / "o"))
    assert code == 2 and "does not match the model config" in stderr and one_error_line(stderr)
    assert files_in(tmp_path / "o") == []
    (tmp_path / "cfg.json").write_text('{"depth": 2, "heads": 3}')
    code, _, stderr = run("--config", str(tmp_path / "cfg.json"), "--res", "256", "--out", str(tmp_path / "o"))
    assert code == 2 and "unknown PT-DiT config keys ['heads']" in stderr


@pytest.mark.parametrize("case", ["random_bytes", "random_bytes_safetensors", "missing_key"])
def test_a_bad_checkpoint_is_one_line_and_leaves_no_directory(tmp_path, case):
    if case == "missing_key":
        checkpoint = tmp_path / "w.safetensors"
        save_checkpoint(PTDiT(preset("tiny")), checkpoint)
        extra = ["--checkpoint-key", "ema"]
    else:
        checkpoint = tmp_path / ("w.safetensors" if case.endswith("safetensors") else "w.pt")
        checkpoint.write_bytes(np.random.default_rng(0).bytes(4096))
        extra = []
    code, _, stderr = run("--preset", "tiny", "--res", "256", "--checkpoint", str(checkpoint), *extra,
                          "--out", str(tmp_path / "new" / "out"))
    assert code == 2 and one_error_line(stderr), stderr
    assert "weights_only" not in stderr  # torch's advice to load untrusted files unsafely is not passed on
    expected = {"random_bytes": "is not a readable torch (weights only) file (UnpicklingError); accepted: ",
                "random_bytes_safetensors": "is not a readable safetensors file",
                "missing_key": "has no entry 'ema'"}[case]
    assert expected in stderr
    assert not (tmp_path / "new").exists()  # the output directories it would have made are gone too


def test_a_failing_check_publishes_nothing(tmp_path, monkeypatch):
    import export.checks.parity as parity

    monkeypatch.setitem(parity.MAX_REL_L2, "fp32", 1e-12)  # no real export can meet this
    for level in ("fast", "full"):
        code, _, stderr = run("--preset", "tiny", "--res", "256", "--precision", "fp32", "--out", str(tmp_path),
                              "--checks", level)
        check = "onnxruntime_parity" if level == "full" else "onnxruntime_parity_first_block"
        assert code == 1 and f"check '{check}' failed" in stderr and "nothing was written" in stderr
        assert files_in(tmp_path) == []


def test_the_first_block_check_sees_an_error_inside_block_0(tmp_path, monkeypatch):
    """Fault injection: the PyTorch reference of the cut graph gets one block-0 weight scaled by 1.05, as if the
    export had mangled it; the cheap check must see it (and passes without the fault, above)."""
    import export.checks.parity as parity

    real = parity.first_block_model

    def perturbed(model):
        reference = real(model)
        with torch.no_grad():
            reference.transformer_blocks[0].attn1.to_v.weight.mul_(1.05)
        return reference

    monkeypatch.setattr(parity, "first_block_model", perturbed)
    code, _, stderr = run("--preset", "tiny", "--res", "256", "--precision", "fp32", "--out", str(tmp_path),
                          "--checks", "fast")
    assert code == 1 and "check 'onnxruntime_parity_first_block' failed" in stderr and files_in(tmp_path) == []


def test_check_levels(tmp_path):
    code, stdout, stderr = run("--preset", "tiny", "--res", "256", "--precision", "fp32", "--out", str(tmp_path / "f"),
                               "--checks", "full")
    assert code == 0, stderr
    assert "checks passed (full)" in stdout and "whole model" in stdout
    checks = json.loads((tmp_path / "f" / "ptdit-tiny-256-b2-fp32.json").read_text())["checks"]
    assert checks["level"] == "full" and "onnxruntime_parity_first_block" not in checks
    assert checks["onnxruntime_parity"]["vs_torch_fp32"]["rel_l2"] < 1e-5
    code, stdout, stderr = run("--preset", "tiny", "--res", "256", "--precision", "fp32", "--out", str(tmp_path / "n"),
                               "--checks", "none")
    assert code == 0 and "checks: none" in stdout
    assert json.loads((tmp_path / "n" / "ptdit-tiny-256-b2-fp32.json").read_text())["checks"] == {"skipped": True}


def test_a_parser_rejection_publishes_nothing(tmp_path, monkeypatch):
    import export.checks.tensorrt_parse as tensorrt_parse

    def rejecting(path):
        raise tensorrt_parse.ParseFailed(f"TensorRT-RTX 1.7.1.116's ONNX parser rejected {path.name}: a reason")

    monkeypatch.setattr(tensorrt_parse, "parse", rejecting)
    code, _, stderr = run("--preset", "tiny", "--res", "256", "--out", str(tmp_path), "--checks", "fast")
    assert code == 1 and one_error_line(stderr)
    assert "check 'tensorrt_parse' failed: TensorRT-RTX 1.7.1.116's ONNX parser rejected" in stderr
    assert files_in(tmp_path) == []


def test_an_interrupted_export_leaves_nothing(tmp_path, monkeypatch):
    import export.checks.structural as checks

    def interrupt(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(checks, "tensorrt_ops", interrupt)
    code, _, stderr = run("--preset", "tiny", "--res", "256", "--out", str(tmp_path))
    assert code == 130 and "interrupted" in stderr
    assert files_in(tmp_path) == []  # no artifact and no temporary directory


def test_json_summary(tmp_path):
    code, stdout, _ = run("--preset", "tiny", "--res", "256", "--precision", "fp32", "--out", str(tmp_path), "--json")
    assert code == 0
    summary = json.loads(stdout)
    assert summary[0]["onnx"].endswith("ptdit-tiny-256-b2-fp32.onnx") and summary[0]["checks"]["tensorrt_ops"]["passed"]
    parity = "onnxruntime_parity" if torch.cuda.is_available() else "onnxruntime_parity_first_block"
    assert summary[0]["checks"][parity]["torch_device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert set(summary[0]["seconds"]) >= {"build_model", "trace", "write", "tensorrt_parse", parity}


def test_console_script_and_help_without_torch():
    help_text = subprocess.run(["ptdit-export", "--help"], capture_output=True, text=True, check=True).stdout
    assert "Examples:" in help_text and "--res" in help_text and "--checks" in help_text
    probe = "import sys, export.cli; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "False"
