"""The whole denoising step as one graph (ptdit-export --step): the module, the export, the device-resident step
loop through ONNX Runtime and PyTorch against the host sampler, the host<->device counters, ptdit-run and
ptdit-diff. The TensorRT loop's ordering is in test_cuda_layer.py, its numbers on a GPU in test_gpu.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from export.options import ExportOptions
from export.run import export_all
from ptdit import preset
from ptdit.contract.sizes import Size
from ptdit.step import DenoisingStep
from runtime.backends.feeds import nbytes
from runtime.diff.metrics import DEFAULT_THRESHOLDS
from runtime.sampling.host_loop import Sampler
from runtime.sampling.schedule import euler_update, guided_velocity
from runtime.sampling.step_sampler import StepSampler, make_sampler
from runtime.sampling.text import make_conditioning
from runtime.session import open_session

ROOT = Path(__file__).resolve().parents[2]
STEPS = 30


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.astype(np.float64) - b) / np.linalg.norm(b.astype(np.float64)))


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[tuple[int, int, str], tuple[Path, Path]]:
    """(res, batch, precision) -> (noise-prediction ONNX, step ONNX), exported together by --step. The fp32 256
    guided pair runs the export's fast checks; the rest skip them (test_real_engines parses and builds them)."""
    out = tmp_path_factory.mktemp("step-exports")
    paths = {}
    for res, batch, precision in [(256, 2, "fp32"), (256, 1, "fp32"), (1024, 2, "fp32"), (1024, 1, "fp32"),
                                  (256, 2, "fp16")]:
        checks = "fast" if (res, batch, precision) == (256, 2, "fp32") else "none"
        opts = ExportOptions(preset("tiny"), [Size(res, res)], precision=precision, batch=batch, out_dir=out,
                             checks=checks, step=True)
        noise, step = export_all(opts, lambda line: None)
        paths[(res, batch, precision)] = (noise.onnx_path, step.onnx_path)
    return paths


def test_the_step_module_is_the_host_samplers_step(tiny_model):
    """One DenoisingStep equals the model's prediction on the (cond, uncond) pair followed by the host sampler's
    guidance and Euler update (numpy), to the last bit of fp32 arithmetic."""
    gen = torch.Generator().manual_seed(0)
    latent = torch.randn(1, 4, 32, 32, generator=gen)
    text = torch.randn(2, 12, 4096, generator=gen)
    mask = torch.ones(2, 12, dtype=torch.int64)
    mask[1, 1:] = 0
    schedule = torch.zeros(31)
    schedule[:3] = torch.tensor([1000.0, 812.5, 640.25])
    step = torch.tensor([1])
    with torch.no_grad():
        latent_next, step_next = DenoisingStep(tiny_model)(latent, step, schedule, text, mask, torch.tensor([4.5]))
        pred = tiny_model(latent.expand(2, -1, -1, -1), schedule[1:2].expand(2), text, mask)[:, :4].numpy()
        unguided, _ = DenoisingStep(tiny_model)(latent, step, schedule, text[:1], mask[:1])
        cond_only = tiny_model(latent, schedule[1:2], text[:1], mask[:1])[:, :4].numpy()
    expected = euler_update(latent.numpy(), guided_velocity(pred[0:1], pred[1:2], 4.5), 812.5, 640.25)
    np.testing.assert_array_equal(latent_next.numpy(), expected)
    assert step_next.tolist() == [2] and step_next.dtype == torch.int64
    np.testing.assert_array_equal(unguided.numpy(), euler_update(latent.numpy(), cond_only, 812.5, 640.25))
    from ptdit.contract.errors import InputError

    with pytest.raises(InputError, match="guidance goes with a \\(cond, uncond\\) text pair"):
        DenoisingStep(tiny_model)(latent, step, schedule, text[:1], mask[:1], torch.tensor([4.0]))


def test_step_export_contract_manifest_and_checks(exports):
    noise, step = exports[(256, 2, "fp32")]
    assert step.name == "ptdit-tiny-256-b2-fp32-step.onnx" and noise.name == "ptdit-tiny-256-b2-fp32.onnx"
    manifest = json.loads(step.with_suffix(".json").read_text())
    assert [(t["name"], t["shape"], t["dtype"]) for t in manifest["inputs"]] == [
        ("latent", [1, 4, 32, 32], "float32"), ("step", [1], "int64"), ("schedule", [1001], "float32"),
        ("text_embeds", [2, 200, 4096], "float32"), ("text_mask", [2, 200], "int64"), ("guidance", [1], "float32")]
    assert [(t["name"], t["shape"]) for t in manifest["outputs"]] == [("latent_next", [1, 4, 32, 32]),
                                                                      ("step_next", [1])]
    info = manifest["export"]["step"]
    assert manifest["export"]["graph"] == "step" and info["carry"] == {"latent": "latent_next", "step": "step_next"}
    assert info["latent_dtype"] == "float32" and info["guidance"] is True and info["max_steps"] == 1000
    assert manifest["block_outputs"]["names"] == ["block_00", "block_01"]
    checks = manifest["checks"]
    assert checks["level"] == "fast" and checks["tensorrt_ops"]["max_rank"] <= 8
    parity = checks["onnxruntime_parity_first_block"]
    assert parity["passed"] and parity["compared"].startswith("latent_next - latent")
    assert parity["vs_torch_fp32"]["rel_l2"] < 1e-5
    noise_manifest = json.loads(noise.with_suffix(".json").read_text())
    assert noise_manifest["export"]["graph"] == "noise_prediction" and noise_manifest["export"]["step"] is None
    unguided = json.loads(exports[(256, 1, "fp32")][1].with_suffix(".json").read_text())
    assert unguided["export"]["step"]["guidance"] is False
    assert "guidance" not in [t["name"] for t in unguided["inputs"]]
    assert unguided["inputs"][3]["shape"] == [1, 200, 4096]


@pytest.mark.parametrize("res,guided", [(256, True), (256, False), (1024, True), (1024, False)],
                         ids=["256-cfg", "256-no-cfg", "1024-cfg", "1024-no-cfg"])
def test_thirty_steps_of_the_step_graph_equal_the_host_sampler(exports, res, guided):
    noise, step = exports[(res, 2 if guided else 1, "fp32")]
    guidance = 4.0 if guided else 1.0
    text = make_conditioning(200, 4096, random_seed=5)
    latents = {}
    for path in (noise, step):
        session = open_session(str(path), "onnxruntime", "cpu")
        sampler = make_sampler(session, STEPS, guidance, seed=3)
        assert isinstance(sampler, StepSampler) == (path == step)
        latents[path] = sampler.sample(text).latent
        session.close()
    assert latents[step].shape == (1, 4, res // 8, res // 8) and latents[step].dtype == np.float32
    assert rel_l2(latents[step], latents[noise]) <= 1e-5


def test_fp16_step_graph_stays_within_the_fp16_trajectory_threshold(exports):
    text = make_conditioning(200, 4096, random_seed=5)
    reference = open_session(str(exports[(256, 2, "fp32")][0]), "onnxruntime", "cpu")
    host_fp16 = open_session(str(exports[(256, 2, "fp16")][0]), "onnxruntime", "cpu")
    step_fp16 = open_session(str(exports[(256, 2, "fp16")][1]), "onnxruntime", "cpu")
    fp32, host, step = (make_sampler(s, STEPS, 4.0, seed=3).sample(text).latent
                        for s in (reference, host_fp16, step_fp16))
    assert rel_l2(step, fp32) <= DEFAULT_THRESHOLDS["fp16"].max_trajectory_rel_l2
    assert rel_l2(step, host) <= 1e-5  # the fp32 carry adds nothing to the host loop's fp16 error


def test_the_step_loop_moves_nothing_between_steps(exports):
    """Counters through ONNX Runtime: the step loop uploads its inputs once and copies the latent out once; the
    host loop moves the latent pair and the timestep in and the prediction out at every step."""
    noise, step = exports[(1024, 2, "fp32")]
    text = make_conditioning(200, 4096, random_seed=0)
    session = open_session(str(step), "onnxruntime", "cpu")
    result = make_sampler(session, 4, 4.0).sample(text)
    inputs = {t.name: nbytes(t) for t in session.artifact.inputs}
    session.close()
    latent_bytes = 4 * 128 * 128 * 4
    assert result.setup.to_device_bytes == sum(inputs.values()) and result.setup.from_device_bytes == 0
    none = {"to_device_bytes": 0, "from_device_bytes": 0, "syncs": 0}
    assert all(s.transfers.to_dict() == none for s in result.steps)
    assert result.finish.from_device_bytes == latent_bytes and result.finish.to_device_bytes == 0
    session = open_session(str(noise), "onnxruntime", "cpu")
    host = Sampler(session, 4, 4.0).sample(text)
    session.close()
    per_step = host.transfers()["per_step_after_first_max"]
    assert per_step["to_device_bytes"] == 2 * latent_bytes + 2 * 4  # the pair and two timesteps
    assert per_step["from_device_bytes"] == 2 * 8 * 128 * 128 * 4  # noise_pred has 8 channels
    assert rel_l2(result.latent, host.latent) <= 1e-5


def test_the_pytorch_backend_runs_step_artifacts_on_the_device_too(exports):
    noise, step = exports[(256, 2, "fp32")]
    text = make_conditioning(200, 4096, random_seed=1)
    onnx_session = open_session(str(step), "onnxruntime", "cpu")
    torch_session = open_session(str(step), "torch", "cpu")
    expected = make_sampler(onnx_session, 6, 4.0, seed=2).sample(text).latent
    result = make_sampler(torch_session, 6, 4.0, seed=2).sample(text)
    assert rel_l2(result.latent, expected) <= 1e-5
    assert all(s.transfers.to_device_bytes == s.transfers.from_device_bytes == 0 for s in result.steps)
    # The plain run() interface still works on a step artifact: one step, outputs by the contract's names.
    feeds = {"latent": np.zeros((1, 4, 32, 32), np.float32), "step": np.array([0]),
             "schedule": np.zeros(1001, np.float32),
             "text_embeds": text.embeds, "text_mask": text.mask, "guidance": np.ones(1, np.float32)}
    torch_session.set_inputs(feeds)
    out = torch_session.run()
    assert sorted(out) == ["latent_next", "step_next"] and out["step_next"].tolist() == [1]
    onnx_session.close()
    torch_session.close()


def run_cli(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True)


def test_ptdit_run_writes_the_same_latent_from_either_artifact(exports, tmp_path):
    from runtime.cli.run import main

    noise, step = exports[(256, 2, "fp32")]
    latents, summaries = {}, {}
    for path in (noise, step):
        out = tmp_path / f"{path.stem}.npy"
        result = CliRunner().invoke(main, [str(path), "--random-text", "--seed", "7", "--steps", "12",
                                           "--out", str(out), "--json"])
        assert result.exit_code == 0, result.output
        summaries[path] = json.loads(result.stdout[result.stdout.index("{"):])
        latents[path] = np.load(out)
    assert rel_l2(latents[step], latents[noise]) <= 1e-6
    assert summaries[step]["loop"] == "step graph" and summaries[noise]["loop"] == "host"
    transfers = summaries[step]["transfers"]
    assert transfers["per_step_after_first_max"] == {"to_device_bytes": 0, "from_device_bytes": 0, "syncs": 0}
    assert transfers["finish"]["from_device_bytes"] == latents[step].nbytes


@pytest.mark.parametrize("args,message", [
    (["--cfg", "4"], "this step artifact is unguided \\(exported with --batch 1\\): pass --cfg 1"),
])
def test_ptdit_run_refuses_what_a_step_artifact_cannot_do(exports, tmp_path, args, message):
    from runtime.cli.run import main

    out = tmp_path / "x.npy"
    result = CliRunner().invoke(main, [str(exports[(256, 1, "fp32")][1]), "--random-text",
                                       "--out", str(out), *args])
    assert result.exit_code == 2 and not out.exists()
    import re

    assert re.search(message, result.output) and len(result.output.strip().splitlines()) == 1


def test_ptdit_diff_accepts_step_artifacts(exports, tmp_path):
    from runtime.cli.diff import main

    step = exports[(256, 2, "fp32")][1]
    result = CliRunner().invoke(main, [str(step), "--steps", "4", "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / f"{step.stem}.diff.json").read_text())
    entry = report["references"]["fp32"]
    assert list(entry["outputs"]) == ["latent_next - latent"]
    assert entry["outputs"]["latent_next - latent"]["rel_l2"] < 1e-5
    assert entry["trajectory"]["steps"] == 4 and entry["trajectory"]["rel_l2"] < 1e-5
    assert "noise_pred_rel_l2_per_step" not in entry["trajectory"]  # the step loop keeps its state on the device
    assert len(entry["blocks"]) == 2 and report["passed"]


def test_export_step_refusals_leave_nothing(tmp_path):
    result = run_cli("export", "--preset", "tiny", "--res", "256", "--step", "--batch", "3", "--out",
                     str(tmp_path / "a"))
    assert result.returncode == 2
    assert "--step needs --batch 2 (the guidance pair) or 1 (unguided), got 3" in result.stderr
    assert not (tmp_path / "a").exists()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "ptdit-tiny-256-b2-fp16-step.onnx").write_bytes(b"old")
    result = run_cli("export", "--preset", "tiny", "--res", "256", "--step", "--checks", "none", "--out",
                     str(tmp_path / "b"))
    assert result.returncode == 2 and "ptdit-tiny-256-b2-fp16-step.onnx has no manifest" in result.stderr
    assert "it is stale and is not reused; pass --force to replace it" in result.stderr
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["ptdit-tiny-256-b2-fp16-step.onnx"]


def test_the_loops_benchmark_takes_the_noise_artifact_first(exports):
    from ptdit.contract.errors import InputError
    from runtime.bench import main as bench_main
    from runtime.bench import measure_loops

    noise, step = exports[(256, 2, "fp32")]
    with pytest.raises(InputError, match="--loops takes a noise-prediction artifact and then a step artifact"):
        measure_loops(step, noise, "onnxruntime", steps=2, rounds=1)
    result = CliRunner().invoke(bench_main, [])
    assert result.exit_code == 2 and "nothing to measure: pass ARTIFACTS and/or --loops NOISE STEP" in result.output
