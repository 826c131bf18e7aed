"""FP8 exports (ptdit-export --precision fp8): the Q/DQ graph, its calibration and manifest, its checks, the
real TensorRT-RTX build for 8.9 and 12.0 and the refusal of 8.6, and every stage that takes the artifact
(ptdit-run on ONNX Runtime and PyTorch, the step graph, ptdit-diff, a pipeline folder)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

from export.cli import main as export_main
from ptdit.contract.errors import Failure
from ptdit.contract.fp8 import FP8_ELEMENT_TYPE, LAYER_SETS, layer_kind

ROOT = Path(__file__).resolve().parents[2]
STEM = "ptdit-tiny-256-b2-fp8"


def run(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True)


def export(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(export_main, ["--preset", "tiny", "--res", "256", "--precision", "fp8", *args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def fp8(tmp_path_factory) -> Path:
    """One tiny FP8 export with its step graph, default (fast) checks: the real parse and the first-block parity."""
    out = tmp_path_factory.mktemp("fp8")
    code, _, err = export("--step", "--out", str(out))
    assert code == 0, err
    return out


def test_the_graph_holds_fp8_weights_behind_qdq_for_the_quantized_layers_only(fp8):
    manifest = json.loads((fp8 / f"{STEM}.json").read_text())
    export_info = manifest["export"]
    assert export_info["precision"] == "fp8" and export_info["opset"] == 19
    q = export_info["quantization"]
    assert q["format"] == "float8_e4m3fn" and q["layer_set"] == "tcm-mlp"
    assert set(q["quantized_kinds"]) == LAYER_SETS["tcm-mlp"] == {"window_attention", "shifted_window_attention", "mlp"}
    assert {"final_layer", "adaln", "timestep_embedder", "proxy_cross_attention"} <= set(q["kept_kinds"])
    calibration = q["calibration"]
    assert calibration["calibrator"] == "max" and calibration["trajectories"] == 2 and calibration["steps"] == 4
    assert calibration["timesteps"][:2] == [1000.0, 600.0] and calibration["text"].startswith("random")  # shift 0.5

    model = onnx.load(str(fp8 / f"{STEM}.onnx"))
    fp8_weights = {t.name.removesuffix(".weight") for t in model.graph.initializer if t.data_type == FP8_ELEMENT_TYPE
                   and t.name.endswith(".weight")}
    assert fp8_weights == set(q["scales"]) and all(layer_kind(n) in LAYER_SETS["tcm-mlp"] for n in fp8_weights)
    assert len(fp8_weights) == 2 * 10  # per block: window and shifted-window q, k, v, out, the MLP's 2
    for name, (input_scale, weight_scale) in q["scales"].items():
        assert input_scale > 0 and weight_scale > 0, name
    kept = {t.name: t.data_type for t in model.graph.initializer}
    assert kept["proj_out.weight"] == onnx.TensorProto.FLOAT16  # the final layer stays fp16
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("DequantizeLinear") == len(fp8_weights) + ops.count("QuantizeLinear")
    parity = manifest["checks"]["onnxruntime_parity_first_block"]
    assert parity["passed"] and 1e-3 < parity["vs_torch_fp32"]["rel_l2"] < parity["vs_torch_fp32"]["max_rel_l2"]
    assert manifest["checks"]["tensorrt_parse"]["ran"] is (importlib.util.find_spec("tensorrt_rtx") is not None)
    # the step graph: the same scales (one calibration per resolution), its Linear weights named as the model's
    step = json.loads((fp8 / f"{STEM}-step.json").read_text())["export"]["quantization"]
    assert step["scales"] == q["scales"]
    step_model = onnx.load(str(fp8 / f"{STEM}-step.onnx"), load_external_data=False)
    step_fp8 = [t.name for t in step_model.graph.initializer if t.data_type == FP8_ELEMENT_TYPE
                and t.name != "fp8_zero_point"]
    assert len(step_fp8) == 20 and all(name.startswith("model.") for name in step_fp8)


def test_onnxruntime_loads_and_runs_an_fp8_export_with_its_default_session_options(fp8):
    """Other tools (Triton's onnxruntime backend, Polygraphy, Optimum) open the file with ONNX Runtime's defaults: its
    QDQ rewrites put a Transpose on FLOAT8E4M3FN, which the file's opset (21) allows. Same graph as the project's own
    session runs, to within where ORT's moved Q/DQ leave its fp16 casts."""
    import onnxruntime as ort

    from ptdit.contract.fp8 import FILE_OPSET
    from runtime.artifact import load_artifact
    from runtime.backends.onnxruntime_session import OnnxRuntimeSession

    path = fp8 / f"{STEM}.onnx"
    model = onnx.load(str(path), load_external_data=False)
    assert {o.domain: o.version for o in model.opset_import}[""] == FILE_OPSET == 21
    plain = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {"latent": rng.standard_normal((2, 4, 32, 32), dtype=np.float32),
             "timestep": np.array([900.0, 500.0], np.float32),
             "text_embeds": rng.standard_normal((2, 200, 4096), dtype=np.float32),
             "text_mask": np.ones((2, 200), np.int64)}
    assert {i.name for i in plain.get_inputs()} == set(feeds)
    (default,) = plain.run(["noise_pred"], feeds)
    session = OnnxRuntimeSession(load_artifact(path), device="cpu")
    try:
        (ours,) = session.ort_session.run(["noise_pred"], feeds)
    finally:
        session.close()
    assert np.isfinite(default).all() and default.shape == ours.shape == (2, 8, 32, 32)
    diff = np.linalg.norm(default.astype(np.float64) - ours) / np.linalg.norm(ours.astype(np.float64))
    assert diff < 1e-2, diff  # tiny at 256, seeded weights: 3.2e-3 (1.2e-2 between the FP8 graph and PyTorch fp32)


def test_the_fake_quantized_twin_rounds_as_onnxruntime_does():
    import ml_dtypes
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    from ptdit.fp8 import qdq

    scale = np.float16(0.0106)
    x = (np.random.default_rng(0).standard_normal(50_000) * 2).astype(np.float16)  # saturates beyond 4.7
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s"], ["y"])]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", 10, [x.size])],
                              [helper.make_tensor_value_info("y", 10, [x.size])],
                              [numpy_helper.from_array(np.array(scale), "s"),
                               numpy_helper.from_array(np.array(0, ml_dtypes.float8_e4m3fn), "z")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 10
    ours = qdq(torch.from_numpy(x), float(scale)).numpy()
    theirs = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.array_equal(ours, theirs) and np.abs(ours).max() == np.float16(448 * scale)


def test_the_two_calibrators_and_the_fake_quantized_model(tiny_model):
    from export.calibration import CalibrationOptions, calibrate
    from ptdit.fp8 import fake_quantized

    shape = (2, 4, 32, 32)
    scales = {c: calibrate(tiny_model, CalibrationOptions(calibrator=c, layers="all"), shape, 12, None)
              for c in ("max", "percentile")}
    maxed, pct = scales["max"][0], scales["percentile"][0]
    assert set(maxed) == set(pct) and len(maxed) == 2 * 24 + 2  # every block Linear, the caption projection's 2
    assert all(pct[n].input <= maxed[n].input and pct[n].weight == maxed[n].weight for n in maxed)
    assert any(pct[n].input < maxed[n].input for n in maxed)
    assert scales["percentile"][1].percentile == 99.99 and scales["max"][1].percentile is None
    x = (torch.randn(2, 4, 32, 32), torch.full((2,), 500.0), torch.randn(2, 12, 4096),
         torch.ones(2, 12, dtype=torch.int64))
    with torch.no_grad():
        before = tiny_model(*x)
        with fake_quantized(tiny_model, maxed):
            quantized = tiny_model(*x)
        after = tiny_model(*x)
    assert torch.equal(before, after)  # undone
    error = float((quantized - before).norm() / before.norm())
    assert 1e-3 < error < 0.15


@pytest.mark.parametrize(("args", "message"), [
    (["--opset", "18"], "--precision fp8 needs --opset 19 or later"),
    (["--percentile", "99.5"], "--percentile applies to --calibrator percentile only, and the calibrator is max: add "
                               "--calibrator percentile, or drop --percentile"),
    (["--calibrator", "percentile", "--precision", "fp16"], "the calibration options set the scales of an FP8 export"),
    (["--fp8-layers", "all", "--precision", "fp16"], "the calibration options set the scales of an FP8 export"),
    (["--calibration-prompts", "PROMPTS"], "--calibration-prompts encodes prompts with the pipeline's text encoder"),
    (["--calibration-text", "TEXT"], "holds float32 [3, 5, 4096]; the export needs float features [N, 200, 4096]"),
    (["--calibration-text", "PROMPTS"], "--calibration-text must be a .npy, .npz or .safetensors file"),
    (["--calibration-text", "TEXT", "--calibration-prompts", "PROMPTS", "--pipeline"], "both name the calibration"),
])
def test_bad_fp8_options_are_refused_in_one_line_and_nothing_is_written(tmp_path, args, message):
    (tmp_path / "p.txt").write_text("a red fox\n")
    np.save(tmp_path / "t.npy", np.zeros((3, 5, 4096), np.float32))
    paths = {"PROMPTS": str(tmp_path / "p.txt"), "TEXT": str(tmp_path / "t.npy")}
    code, _, err = export(*[paths.get(a, a) for a in args], "--out", str(tmp_path / "out"))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_reuse_follows_the_calibration(fp8, tmp_path):
    code, out, _ = export("--step", "--out", str(fp8))
    assert code == 0 and out.count("up to date") == 2
    for other in (["--calibrator", "percentile"], ["--fp8-layers", "all"]):
        code, _, err = export(*other, "--out", str(fp8))
        assert code == 2 and "calibration differ" in err
    text = tmp_path / "features.npz"
    rng = np.random.default_rng(3)
    np.savez(text, text_embeds=rng.standard_normal((2, 200, 4096), dtype=np.float32),
             text_mask=np.ones((2, 200), np.int64))
    code, _, err = export("--calibration-text", str(text), "--calibration-steps", "2", "--fp8-layers", "all",
                          "--out", str(tmp_path / "out"))
    assert code == 0, err
    q = json.loads((tmp_path / "out" / f"{STEM}.json").read_text())["export"]["quantization"]
    assert q["calibration"]["text"].startswith("features.npz (2 prompts, sha256 ") and q["calibration"]["steps"] == 2
    assert q["layer_set"] == "all" and len(q["scales"]) == 2 * 24 + 2
    default = json.loads((fp8 / f"{STEM}.json").read_text())["export"]["quantization"]["scales"]
    assert {n: q["scales"][n] for n in default} != default  # the same layers, other text: other input scales
    model = onnx.load(str(tmp_path / "out" / f"{STEM}.onnx"), load_external_data=False)
    assert sum(t.data_type == FP8_ELEMENT_TYPE for t in model.graph.initializer) == 2 * 24 + 2 + 1  # + zero point


def test_ptdit_run_and_diff_take_fp8_artifacts(fp8, tmp_path):
    from runtime.cli.diff import main as diff_main

    latents = {}
    for name, args in (("ort", []), ("torch", ["--backend", "torch"])):
        result = run("runtime", str(fp8 / f"{STEM}.onnx"), *args, "--random-text", "--steps", "3", "--out",
                     str(tmp_path / f"{name}.npy"))
        assert result.returncode == 0, result.stderr
        latents[name] = np.load(tmp_path / f"{name}.npy")
    assert "torch (cpu, fp8)" in result.stderr  # the fake-quantized twin at the manifest's scales
    rel = np.linalg.norm(latents["ort"] - latents["torch"]) / np.linalg.norm(latents["torch"])
    assert 0 < rel < 0.1
    step = run("runtime", str(fp8 / f"{STEM}-step.onnx"), "--random-text", "--steps", "3", "--out",
               str(tmp_path / "step.npy"))
    assert step.returncode == 0, step.stderr
    report = CliRunner().invoke(diff_main, [str(fp8 / f"{STEM}.onnx"), "--steps", "3", "--out", str(tmp_path),
                                            "--json"])
    assert report.exit_code == 0, report.stderr
    data = json.loads(report.stdout)
    assert data["precision"] == "fp8" and data["passed"]


def test_tensorrt_rtx_builds_fp8_for_8_9_and_12_0_and_refuses_8_6(fp8, tmp_path):
    onnx_path = str(fp8 / f"{STEM}.onnx")
    refused = run("engines", onnx_path, "--target", "rtx", "--compute-capability", "8.6,8.9", "--out", str(tmp_path))
    assert refused.returncode == 2 and refused.stderr.strip().splitlines() == [
        "ptdit-build: error: FP8 needs compute capability 8.9 or later (Ada, Hopper, Blackwell); 8.6 has no FP8: "
        "build an fp16 export for it, or drop 8.6"]
    assert list(tmp_path.iterdir()) == []
    if importlib.util.find_spec("tensorrt_rtx") is None:
        pytest.skip("TensorRT-RTX is not installed (pip install tensorrt-rtx-cu13)")
    built = run("engines", onnx_path, "--target", "rtx", "--compute-capability", "8.9,12.0", "--out", str(tmp_path),
                "--json")
    assert built.returncode == 0, built.stderr
    manifest = json.loads(Path(json.loads(built.stdout)["plan"]).with_suffix(".json").read_text())
    assert manifest["precision"] == "fp8" and manifest["targets"]["compute_capabilities"] == ["8.9", "12.0"]
    assert manifest["export"]["quantization"]["scales"]


def test_fp8_targets_default_to_the_gpus_with_fp8():
    from engines.targets import resolve

    targets = resolve("rtx", (), None, "fp8")
    assert targets.compute_capabilities == ("8.9", "12.0", "12.1") and targets.tag == "sm89-sm120-sm121"
    assert resolve("rtx", (), None, "fp16").tag == "portable"


@pytest.mark.slow  # exports an FP8 pipeline
def test_a_pipeline_folder_with_an_fp8_transformer_calibrated_on_prompts(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red fox in the snow\n\na lighthouse at dusk\n")
    code, _, err = export("--pipeline", "--calibration-prompts", str(prompts), "--calibration-steps", "2",
                          "--checks", "none", "--out", str(tmp_path))  # the components' checks: test_pipeline
    assert code == 0, err
    folder = tmp_path / "ptdit-tiny-256-pipeline"
    manifest = json.loads((folder / f"{STEM}.json").read_text())
    assert manifest["export"]["quantization"]["calibration"]["text"].startswith(
        "prompts.txt (2 prompts through the text encoder, sha256 ")
    result = run("runtime", str(folder), "--prompt", "a red fox", "--steps", "3", "--out", str(tmp_path / "fox.png"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "fox.png").stat().st_size > 0


def test_calibration_refuses_non_finite_activations():
    from ptdit.fp8 import Observer

    observer = Observer("max")
    observer.record("a", torch.tensor([1.0, float("inf")]))
    layer = torch.nn.Linear(2, 2)
    with pytest.raises(Failure, match="NaN or infinite values at the input of a") as error:
        observer.scales({"a": layer})
    assert "check the checkpoint, or calibrate on other text" in str(error.value) and "\x1f" not in str(error.value)


def test_the_percentile_counts_as_given_only_when_it_was_given(tmp_path):
    """--percentile (percentile=) is refused with the max calibrator, whatever its value (it was dropped: the
    manifest recorded max); not given, the percentile calibrator takes 99.99."""
    from export import export_model
    from export.calibration import CalibrationOptions
    from ptdit.contract.errors import InputError
    from ptdit.contract.fp8 import DEFAULT_PERCENTILE

    CalibrationOptions().check()
    assert CalibrationOptions("percentile").quantile == DEFAULT_PERCENTILE and CalibrationOptions().quantile is None
    assert CalibrationOptions("percentile", 99.5).quantile == 99.5
    for given in (99.5, DEFAULT_PERCENTILE):
        with pytest.raises(InputError, match=r"percentile applies to calibrator='percentile' only, and the calibrator "
                                             r"is max: add calibrator='percentile', or drop percentile"):
            CalibrationOptions("max", given).check()
    with pytest.raises(InputError, match="percentile applies to calibrator='percentile' only"):
        export_model(256, preset="tiny", precision="fp8", percentile=99.5, out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_fp8_graph_whose_manifest_says_fp16_is_refused_by_the_projects_check(fp8, tmp_path):
    """The graph's own records are read (without its weights) before ONNX Runtime parses it, whose INVALID_GRAPH
    text about a float8 Transpose would otherwise speak first."""
    stem = "ptdit-tiny-256-b2-fp8"
    for f in fp8.glob(f"{stem}.*"):
        shutil.copy(f, tmp_path / f.name)
    manifest = tmp_path / f"{stem}.json"
    data = json.loads(manifest.read_text())
    data["export"]["precision"] = "fp16"
    del data["export"]["quantization"]
    manifest.write_text(json.dumps(data))
    done = run("runtime", str(tmp_path / f"{stem}.onnx"), "--random-text", "--steps", "1", "--out",
               str(tmp_path / "l.npy"))
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert f"{stem}.onnx is not the graph its manifest describes (the graph records another precision)" in done.stderr
    assert "INVALID_GRAPH" not in done.stderr and not (tmp_path / "l.npy").exists()
