"""ptdit-run and ptdit-diff where real users push: SIGTERM while sampling, NaN results never written and never
passing a gate, and inputs that lie (files swapped, manifests edited and re-stamped, files cut short, bytes that
are not text), options that do not apply to the artifact.
The tiny pipeline folders of tests/conftest.py (with their transformer artifacts) are shared."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import STEM, copy_artifact, edit_json, one_error_line, run_command
from ptdit.contract.files import file_sha256

ROOT = Path(__file__).resolve().parents[2]


def test_sigterm_while_sampling_leaves_no_latent(folder, tmp_path):
    out = tmp_path / "new" / "l.npy"
    process = subprocess.Popen([sys.executable, "-m", "runtime", str(folder / f"{STEM}.onnx"),
                                "--random-text", "--steps", "1000", "--out", str(out), "-v"], cwd=ROOT,
                               stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    for line in process.stderr:
        if "step 2/1000" in line:
            break
    process.send_signal(signal.SIGTERM)
    rest = process.stderr.read()
    assert process.wait(timeout=60) == 143, rest
    assert rest.strip().splitlines()[-1] == "ptdit-run: error: terminated; nothing was written"
    assert not (tmp_path / "new").exists()


def test_a_nan_metric_fails_every_gate():
    from runtime.diff.artifact_diff import _failures
    from runtime.diff.metrics import Thresholds, within
    from runtime.diff.report import report_json

    assert not within(float("nan"), 1.0) and not within(float("inf"), 1.0) and within(0.5, 1.0)
    nan = float("nan")
    entry = {"outputs": {"noise_pred": {"rel_l2": nan, "within_tolerance": True, "outside_tolerance": nan,
                                        "max_abs": nan}},
             "trajectory": {"steps": 2, "rel_l2": nan}}
    failures = _failures("fp32", entry, Thresholds(1e-3, 1e-3, 1e-2, 1e-2))
    assert len(failures) == 3, failures
    assert json.loads(report_json(entry))["trajectory"]["rel_l2"] == "nan"  # strict JSON: no bare NaN token


def test_a_latent_or_image_with_nan_is_never_written(folder, tmp_path):
    from runtime.errors import RuntimeFailure
    from runtime.pipeline.tiling import to_uint8

    huge = np.full((2, 200, 4096), 1e30, dtype=np.float32)  # finite in fp32, inf in the fp16 graph
    np.save(tmp_path / "huge.npy", huge)
    result = run_command("runtime", str(folder / f"{STEM}.onnx"), "--text", str(tmp_path / "huge.npy"),
                 "--steps", "2", "--out", str(tmp_path / "l.npy"))
    assert result.returncode == 1
    assert "NaN or infinite values" in one_error_line(result, "ptdit-run")
    assert not (tmp_path / "l.npy").exists()
    image = np.zeros((1, 3, 1, 2), dtype=np.float32)
    image[0, 0, 0, 1] = np.nan
    with pytest.raises(RuntimeFailure, match="the decoded image has 1 NaN or infinite values"):
        to_uint8(image)


# 3. Inputs that lie are caught before the work.

def lying_pipeline(folder: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "pipeline"
    shutil.copytree(folder, copy)
    return copy


def restamp(folder: Path) -> None:
    edit_json(folder / "pipeline.json", lambda d: d.update(
        sha256={name: file_sha256(folder / name) for name in d["sha256"] if (folder / name).exists()}))


def test_a_transformer_of_another_resolution_is_refused_before_anything_runs(pipelines, tmp_path):
    folder = lying_pipeline(pipelines[256], tmp_path)
    other = "ptdit-tiny-1024-b2-fp16"
    for suffix in (".onnx", ".json"):  # under the name pipeline.json gives, its hash re-stamped
        shutil.copy(pipelines[1024] / f"{other}{suffix}", folder / f"{STEM}{suffix}")
    edit_json(folder / f"{STEM}.json", lambda d: d["artifact"].update(
        onnx=f"{STEM}.onnx", sha256={f"{STEM}.onnx": file_sha256(folder / f"{STEM}.onnx")}))
    restamp(folder)
    result = run_command("runtime", str(folder), "--prompt", "x", "--steps", "1", "--out",
                 str(tmp_path / "x.png"))
    assert result.returncode == 2 and "encode:" not in result.stderr
    line = one_error_line(result, "ptdit-run")
    assert "do not fit each other" in line and "is for 1024x1024 px, pipeline.json says 256x256" in line
    assert "VAE decoder" in line


def test_a_truncated_negative_embedding_is_one_line(folder, tmp_path):
    folder = lying_pipeline(folder, tmp_path)
    negative = folder / "negative.npz"
    negative.write_bytes(negative.read_bytes()[:1000])
    result = run_command("runtime", str(folder), "--prompt", "x", "--no-verify", "--out", str(tmp_path / "x.png"))
    assert result.returncode == 2
    assert "negative.npz is not a readable .npz file (BadZipFile" in one_error_line(result, "ptdit-run")


def test_a_nan_in_the_stored_negative_prompt_names_its_file_not_an_option(folder, tmp_path):
    folder = lying_pipeline(folder, tmp_path)
    with np.load(folder / "negative.npz") as stored:
        arrays = dict(stored)
    arrays["text_embeds"].flat[:7] = np.nan
    np.savez(folder / "negative.npz", **arrays)
    restamp(folder)
    result = run_command("runtime", str(folder), "--prompt", "x", "--steps", "1", "--out", str(tmp_path / "x.png"))
    assert result.returncode == 2 and "encode:" not in result.stderr
    line = one_error_line(result, "ptdit-run")
    assert f"{folder / 'negative.npz'} (the folder's stored negative prompt) holds 7 NaN or infinite values" in line
    assert "re-export the folder with ptdit-export --pipeline" in line and "--negative-prompt" not in line


def test_a_prompt_that_is_not_utf8_is_refused(folder, tmp_path):
    result = run_command("runtime", str(folder), "--prompt", os.fsdecode(b"a \xff fox"), "--out",
                 str(tmp_path / "x.png"))
    assert result.returncode == 2
    assert "the prompt is not valid UTF-8 text" in one_error_line(result, "ptdit-run")


@pytest.mark.parametrize("lie,record", [
    (lambda d: d["model"]["config"].update(depth=3), "config_sha256"),  # the manifest of another preset
    (lambda d: d["export"].update(precision="fp32"), "precision"),  # an fp16 graph judged by fp32 limits
])
def test_a_manifest_that_describes_another_graph_is_refused(folder, tmp_path, lie, record):
    onnx_path = copy_artifact(folder, STEM, tmp_path)
    edit_json(onnx_path.with_suffix(".json"), lie)
    for module, prog, args in [("runtime", "ptdit-run", [str(onnx_path), "--random-text", "--out",
                                                         str(tmp_path / "l.npy")]),
                               ("diff", "ptdit-diff", [str(onnx_path), "--steps", "1"])]:
        result = run_command(module, *args)
        assert result.returncode == 2, result.stderr
        line = one_error_line(result, prog)
        assert f"{onnx_path.name} is not the graph its manifest describes (" in line
        assert f"the graph records another {record})" in line or (prog == "ptdit-diff" and "depth 3" in line)
    assert not list(tmp_path.glob("*.diff.*")) and not (tmp_path / "l.npy").exists()


@pytest.mark.parametrize("args,message", [
    (["--weight-budget", "1G"], "a weight budget applies to a TensorRT plan only"),
    (["--lean-runtime", "libnvinfer_lean.so", "--runtime-cache-dir", "c"],
     "a runtime cache directory and a lean runtime apply to a TensorRT plan only"),
])
def test_options_that_do_not_apply_to_the_artifact_are_refused(folder, tmp_path, args, message):
    result = run_command("runtime", str(folder / f"{STEM}.onnx"), "--random-text", "--steps", "1",
                 "--out", str(tmp_path / "l.npy"), *args)
    assert result.returncode == 2 and message in one_error_line(result, "ptdit-run")


@pytest.mark.parametrize("case,message", [
    ("blocks_plan_on_onnx", "a blocks plan (--blocks-plan) is for the per-block comparison of a plan artifact"),
    ("gates_on_a_folder", "--rtol, --max-rel-l2 apply to an .onnx or .plan"),
    ("cpu_for_a_plan", "is a TensorRT plan, which runs on the GPU only: drop device cpu"),
])
def test_diff_and_run_options_that_do_not_apply_are_refused(folder, tmp_path, case, message):
    if case == "blocks_plan_on_onnx":
        result = run_command("diff", str(folder / f"{STEM}.onnx"), "--blocks-plan", "x.plan", "--out", str(tmp_path))
    elif case == "gates_on_a_folder":
        result = run_command("diff", str(folder), "--rtol", "0.1", "--max-rel-l2", "0.1", "--out", str(tmp_path))
    else:
        from conftest import fake_plan

        result = run_command("runtime", str(fake_plan(tmp_path)), "--random-text", "--device", "cpu", "--out",
                     str(tmp_path / "l.npy"))
    assert result.returncode == 2 and message in one_error_line(result, "ptdit-diff" if case != "cpu_for_a_plan"
                                                                 else "ptdit-run")
    assert not list(tmp_path.glob("*.diff.*")) and not (tmp_path / "l.npy").exists()
