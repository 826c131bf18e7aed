"""Step caching wherever a run samples: the host loop and the device step loop on every backend here, the served
step loop's host twin, ptdit-run --cache, PTDiTPipeline(cache=...), a video folder, ptdit-cache calibrate and
measure; off (and threshold 0) is the uncached run bit for bit. Measured on the trained tiny checkpoint
(bench/train_tiny.py), whose predictions follow the timestep as a trained DiT's do."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, TRAINED_PROMPTS, one_error_line, run_command
from ptdit.contract.cache import Calibration, ChangeCurve, parse_cache
from ptdit.contract.errors import InputError
from runtime import PTDiTPipeline
from runtime.sampling.step_sampler import make_sampler
from runtime.sampling.text import make_conditioning
from runtime.serve.bls_session import HostStepLoop
from runtime.session import open_session

STEPS = 6
FLAT = Calibration("256x256", ChangeCurve((900.0, 100.0), (3.0, 3.0)), 0.3, 30.0, 31.0, 30, 4.0, 4, 1)


def graphs(folder: Path) -> dict[str, Path]:
    return {"noise": next(folder.glob("ptdit-*-fp16.onnx")), "step": next(folder.glob("ptdit-*-step.onnx"))}


def sample(path: Path, backend: str, cache: str | None, calibration: Calibration | None = None):
    text = make_conditioning(200, 4096, random_seed=0)
    with open_session(str(path), backend, "cpu") as session:
        return make_sampler(session, STEPS, 4.0, 1, cache=parse_cache(cache), calibration=calibration).sample(text)


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
@pytest.mark.parametrize("graph", ["noise", "step"])
def test_off_every_1_and_threshold_0_are_the_uncached_run_bit_for_bit(trained_pipeline, graph, backend):
    path = graphs(trained_pipeline)[graph]
    uncached = sample(path, backend, None)
    assert uncached.transformer_calls == STEPS
    for cache in ("every:1", "calibrated:0", "calibrated+taylor:0"):
        cached = sample(path, backend, cache, FLAT)
        assert np.array_equal(cached.latent, uncached.latent), cache
        assert cached.transformer_calls == STEPS


@pytest.mark.parametrize("cache", ["every:2", "every+taylor:2", "calibrated+taylor:0.5"])
def test_the_device_step_loop_skips_as_the_host_loop_does_and_moves_nothing_per_step(trained_pipeline, cache):
    paths = graphs(trained_pipeline)
    uncached = sample(paths["noise"], "onnxruntime", None)
    for backend in ("onnxruntime", "torch"):
        host = sample(paths["noise"], backend, cache, FLAT)
        assert host.transformer_calls < STEPS
        if backend == "onnxruntime":
            assert not np.array_equal(host.latent, uncached.latent)
        step = sample(paths["step"], backend, cache, FLAT)
        assert step.transformer_calls == host.transformer_calls
        # The same arithmetic, but a skipped step's velocity comes back from the latent it moved: ~1e-7 apart after
        # it, which the fp16 graph's next call can round to one fp16 step apart (~1e-3) on ONNX Runtime.
        assert np.linalg.norm(step.latent - host.latent) / np.linalg.norm(host.latent) < 5e-3, backend
        if backend == "onnxruntime":
            moved = step.transfers()["per_step_after_first_max"]
            assert moved == {"to_device_bytes": 0, "from_device_bytes": 0, "syncs": 0}


def test_the_served_step_loop_on_the_host_skips_as_the_device_loop_does(trained_pipeline):
    """The components layout drives the step graph through Triton with the state on the host (HostStepLoop)."""
    path = graphs(trained_pipeline)["step"]
    device = sample(path, "onnxruntime", "every+taylor:2")
    text = make_conditioning(200, 4096, random_seed=0)
    with open_session(str(path), "onnxruntime", "cpu") as session:
        sampler = make_sampler(session, STEPS, 4.0, 1, cache=parse_cache("every+taylor:2"))
        session.step_loop = lambda carry: HostStepLoop(session, carry)  # the served loop, on a real session
        served = sampler.sample(text)
    assert served.transformer_calls == device.transformer_calls == STEPS // 2
    assert np.allclose(served.latent, device.latent, rtol=0, atol=1e-5)


def run_json(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "runtime", *args, "--json", "-q"], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("graph", ["noise", "step"])
def test_ptdit_run_cache_every_2_makes_half_the_calls(trained_pipeline, tmp_path, graph):
    path = graphs(trained_pipeline)[graph]
    common = [str(path), "--random-text", "--steps", "8", "--out"]
    off = run_json(*common, str(tmp_path / "off.npy"))
    half = run_json(*common, str(tmp_path / "half.npy"), "--cache", "every:2")
    assert (off["transformer_calls"], half["transformer_calls"]) == (8, 4)
    assert off["cache"] == "off" and half["cache"] == "every:2" and half["sample_seconds"] > 0
    if graph == "step":
        assert half["transfers"]["per_step_after_first_max"]["from_device_bytes"] == 0


@pytest.mark.parametrize("args, message", [
    (["--cache", "every:0"], "--cache every:0: N of every:N is a whole number of steps, 1 or more"),
    (["--cache", "calibrated:-1"], "the threshold is a finite number >= 0"),
    (["--cache", "fast"], "--cache fast is not a cache method"),
    (["--cache", "every:2", "--steps", "1"], "needs 2 steps or more; pass --cache off"),
    (["--cache", "default"], "--cache default needs this artifact's change curve, and ptdit-tiny-256-b2-fp16.onnx has "
                             "no calibration: run ptdit-cache calibrate ptdit-tiny-256-b2-fp16.onnx once"),
])
def test_ptdit_run_refuses_a_bad_cache_in_one_line_and_writes_nothing(trained_pipeline, tmp_path, args, message):
    out = tmp_path / "l.npy"
    result = run_command("runtime", str(graphs(trained_pipeline)["noise"]), "--random-text", "--out", str(out), *args)
    assert result.returncode == 2
    assert message in one_error_line(result, "ptdit-run")
    assert not list(tmp_path.iterdir())


@pytest.fixture(scope="module")
def calibrated(trained_pipeline, tmp_path_factory) -> tuple[Path, dict]:
    """A copy of the trained pipeline, calibrated on four of its training prompts at 10 steps."""
    import shutil

    folder = tmp_path_factory.mktemp("calibrated") / trained_pipeline.name
    shutil.copytree(trained_pipeline, folder)
    prompts = folder.parent / "prompts.txt"
    prompts.write_text("\n".join(TRAINED_PROMPTS) + "\n")
    done = subprocess.run([sys.executable, "-m", "runtime.cli.cache", "calibrate", str(folder), "--prompts",
                           str(prompts), "--seeds", "1", "--steps", "10", "--json", "-q"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return folder, json.loads(done.stdout)


def test_calibrate_writes_the_curve_and_a_threshold_that_meets_the_target(calibrated):
    folder, summary = calibrated
    assert summary["out"] == str(folder / "cache.json") and (folder / "cache.json").exists()
    assert summary["threshold"] > 0 and summary["measured_psnr"] >= summary["target_psnr"] == 30.0
    assert len(summary["rates"]) == 9 and all(r > 0 for r in summary["rates"])
    chosen = next(r for r in summary["measured"] if r["cache"] == f"calibrated:{summary['threshold']:g}")
    assert chosen["psnr_db"] >= 30 and chosen["transformer_calls"] < 10


def test_cache_default_skips_on_the_trained_model_from_the_pipeline_and_ptdit_run(calibrated, tmp_path):
    folder, summary = calibrated
    with PTDiTPipeline.from_folder(folder, backend="onnxruntime") as pipe:
        off = pipe(TRAINED_PROMPTS[0], num_inference_steps=10, seed=0, output_type="np")
        on = pipe(TRAINED_PROMPTS[0], num_inference_steps=10, seed=0, output_type="np", cache="default")
    assert off.transformer_calls == 10 and 0 < on.transformer_calls < 10
    assert 0 < np.abs(on.images - off.images).max() < 0.5
    ran = run_json(str(folder), "--prompt", TRAINED_PROMPTS[0], "--steps", "10", "--cache", "default", "--out",
                   str(tmp_path / "fox.png"))
    assert ran["transformer_calls"] == on.transformer_calls and ran["cache"] == "default"


def test_a_calibration_for_other_weights_is_refused_in_one_line(calibrated, tmp_path):
    folder, _ = calibrated
    data = json.loads((folder / "cache.json").read_text())
    data["weights"]["sha256"] = "0" * 64
    (folder / "cache.json").write_text(json.dumps(data))
    try:
        result = run_command("runtime", str(folder), "--prompt", "a fox", "--cache", "default", "--out",
                             str(tmp_path / "x.png"))
        assert result.returncode == 2
        assert "calibrated for other weights" in one_error_line(result, "ptdit-run")
        assert not list(tmp_path.iterdir())
    finally:
        data["weights"]["sha256"] = json.loads((folder / "ptdit-tiny-256-b2-fp16.json").read_text())[
            "model"]["weights"]["sha256"]
        (folder / "cache.json").write_text(json.dumps(data))


def test_measure_prints_speed_and_quality_against_uncached(calibrated):
    folder, _ = calibrated
    done = subprocess.run([sys.executable, "-m", "runtime.cli.cache", "measure", str(folder), "--method", "every:2",
                           "--method", "default", "--steps", "10", "--seeds", "1", "--prompts",
                           str(folder.parent / "prompts.txt"), "--json", "-q"], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    off, every, default = json.loads(done.stdout)
    assert off["cache"] == "off" and off["psnr_db"] == "inf" and off["calls_ratio"] == 1  # strict JSON: "inf"
    assert every["calls_ratio"] == 0.5 and 0 < every["latent_rel_l2"] < 1 and 0 < every["ssim"] < 1
    assert default["transformer_calls"] < 10 and default["psnr_db"] > every["psnr_db"]


def test_measure_refuses_a_bad_method_before_any_work(trained_pipeline):
    result = subprocess.run([sys.executable, "-m", "runtime.cli.cache", "measure", str(trained_pipeline),
                             "--method", "every:-2"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and "--method every:-2" in result.stderr.strip().splitlines()[-1]


def test_a_video_folder_caches_its_step_loop(video_pipeline):
    with PTDiTPipeline.from_folder(video_pipeline, backend="onnxruntime") as pipe:
        off = pipe("a red fox running", num_inference_steps=4, seed=1, output_type="latent")
        half = pipe("a red fox running", num_inference_steps=4, seed=1, output_type="latent", cache="every:2")
    assert (off.transformer_calls, half.transformer_calls) == (4, 2)
    assert not np.array_equal(off.latents, half.latents)


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_a_session_caches_the_same_way_loop_after_loop(trained_pipeline, backend):
    text = make_conditioning(200, 4096, random_seed=0)
    with open_session(str(graphs(trained_pipeline)["step"]), backend, "cpu") as session:
        runs = [make_sampler(session, STEPS, 4.0, 1, cache=parse_cache(c)).sample(text)
                for c in ("every+taylor:2", None, "every+taylor:2")]
    assert np.array_equal(runs[0].latent, runs[2].latent) and runs[0].transformer_calls == STEPS // 2
    assert runs[1].transformer_calls == STEPS


def test_a_skipped_step_of_the_host_loop_moves_nothing_either(trained_pipeline):
    result = sample(graphs(trained_pipeline)["noise"], "onnxruntime", "every:3")
    moved = [step.transfers.to_device_bytes + step.transfers.from_device_bytes for step in result.steps]
    assert [m == 0 for m in moved] == [i % 3 != 0 for i in range(STEPS)]


def test_a_pipeline_made_with_a_cache_caches_every_call_that_names_none(trained_pipeline):
    with pytest.raises(InputError, match="cache='every:x'"):
        PTDiTPipeline.from_folder(trained_pipeline, backend="onnxruntime", cache="every:x")
    with PTDiTPipeline.from_folder(trained_pipeline, backend="onnxruntime", cache="every:2") as pipe:
        cached = pipe(TRAINED_PROMPTS[1], num_inference_steps=6, output_type="latent")
        uncached = pipe(TRAINED_PROMPTS[1], num_inference_steps=6, output_type="latent", cache="off")
        thirds = pipe(TRAINED_PROMPTS[1], num_inference_steps=6, output_type="latent", cache="every:3")
    assert (cached.transformer_calls, uncached.transformer_calls, thirds.transformer_calls) == (3, 6, 2)


def test_ptdit_diff_compares_the_cached_run_with_the_uncached_reference(trained_pipeline, tmp_path):
    from runtime import diff_artifact

    path = graphs(trained_pipeline)["noise"]
    cached = diff_artifact(path, steps=4, cache="every:2", blocks=False, out_dir=tmp_path / "cached").report
    uncached = diff_artifact(path, steps=4, blocks=False, out_dir=tmp_path / "off").report
    assert (cached["cache"], uncached["cache"]) == ("every:2", "off")
    trajectory = cached["references"]["fp32"]["trajectory"]
    assert "noise_pred_rel_l2_per_step" not in trajectory  # a skipped step has no pass of its own
    assert trajectory["rel_l2"] > 10 * uncached["references"]["fp32"]["trajectory"]["rel_l2"]


def test_ptdit_diff_of_a_calibrated_folder_caches_the_pipeline_and_not_its_graphs(calibrated, tmp_path):
    from runtime import diff_artifact

    folder, _ = calibrated
    report = diff_artifact(folder, steps=10, cache="default", prompt=TRAINED_PROMPTS[2], out_dir=tmp_path).report
    assert report["cache"] == "default"
    assert "noise_pred_rel_l2_per_step" in report["components"]["transformer"]["references"]["fp32"]["trajectory"]
    assert 20 < report["image"]["psnr_db"] < 60


def test_calibrate_replaces_a_calibration_of_other_weights_and_measure_refuses_first(calibrated, tmp_path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(calibrated[0], folder)
    data = json.loads((folder / "cache.json").read_text())
    data["weights"]["sha256"] = "0" * 64
    (folder / "cache.json").write_text(json.dumps(data))
    measure = subprocess.run([sys.executable, "-m", "runtime.cli.cache", "measure", str(folder), "--method",
                              "default", "--steps", "4", "--seeds", "1"], cwd=ROOT, capture_output=True, text=True)
    assert measure.returncode == 2 and "uncached" not in measure.stderr
    assert "was calibrated for other weights" in measure.stderr.strip().splitlines()[-1]
    done = subprocess.run([sys.executable, "-m", "runtime.cli.cache", "calibrate", str(folder), "--steps", "4",
                           "--seeds", "1", "--prompts", str(calibrated[0].parent / "prompts.txt"), "-q"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads((folder / "cache.json").read_text())["weights"]["sha256"] != "0" * 64


def test_a_folder_of_two_sizes_is_calibrated_per_size(sized_pipeline, tmp_path):
    import shutil

    folder = tmp_path / sized_pipeline.name
    shutil.copytree(sized_pipeline, folder)
    done = subprocess.run([sys.executable, "-m", "runtime.cli.cache", "calibrate", str(folder), "--height", "1408",
                           "--width", "768", "--steps", "4", "--seeds", "1", "--target-psnr", "10", "-q"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert [c["size"] for c in json.loads((folder / "cache.json").read_text())["calibrations"]] == ["768x1408"]
    result = run_command("runtime", str(folder), "--prompt", "a fox", "--steps", "4", "--cache", "default", "--out",
                         str(tmp_path / "wide.png"))  # the folder's first size, 1408x768, is not calibrated
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "is calibrated for 768x1408, not 1408x768" in one_error_line(result, "ptdit-run")


def test_a_tensorrt_runtime_without_a_builder_is_refused_before_any_upload():
    import types

    from runtime.backends.tensorrt.reuse import ReuseEngines

    with pytest.raises(InputError, match="tensorrt_lean has no builder: install the full tensorrt package"):
        ReuseEngines(types.SimpleNamespace(__name__="tensorrt_lean"), None, None, (1, 4, 32, 32), 1001)
