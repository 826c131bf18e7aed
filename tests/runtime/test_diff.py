"""ptdit-diff through ONNX Runtime on tiny artifacts: thresholds, the per-block localisation of a corrupted
block, report schema, exit codes and bad input."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from conftest import artifact_copy
from runtime.cli.diff import main


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def report_of(artifact: Path) -> dict:
    return json.loads(artifact.with_name(artifact.stem + ".diff.json").read_text())


def test_fp32_passes_tight_thresholds_and_writes_report_and_plot(tmp_path):
    path = artifact_copy(tmp_path, "fp32")
    code, stdout, stderr = run(str(path), "--steps", "3")
    assert code == 0, stderr
    assert "| torch fp32 | noise_pred |" in stdout and "| torch fp32 | block 1 |" in stdout and "PASSED" in stdout
    report = report_of(path)
    assert report["schema"] == "ptdit-diff/1" and report["passed"] and report["failures"] == []
    entry = report["references"]["fp32"]
    metrics = entry["outputs"]["noise_pred"]
    assert set(metrics) == {"max_abs", "mean_abs", "median_abs", "max_rel", "rel_l2", "cosine", "outside_tolerance",
                            "within_tolerance"}
    assert metrics["rel_l2"] < 1e-5 and metrics["cosine"] > 0.999999 and metrics["outside_tolerance"] == 0
    assert len(entry["blocks"]) == 2 and entry["first_divergent_block"] is None
    assert entry["trajectory"]["steps"] == 3 and entry["trajectory"]["rel_l2"] < 1e-4
    # Per step, the reference ran on the inputs the artifact saw (else fp32 would be far off, not ~1e-7).
    per_step = entry["trajectory"]["noise_pred_rel_l2_per_step"]
    assert len(per_step) == 3 and max(per_step) < 1e-5
    assert "noise_pred along the trajectory, on the inputs the artifact saw" in stdout
    assert path.with_name(path.stem + ".diff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fp16_reports_the_expected_error_band_against_both_references(tmp_path):
    path = artifact_copy(tmp_path, "fp16")
    code, stdout, stderr = run(str(path), "--reference", "both", "--steps", "3", "--json")
    assert code == 0, stderr
    report = json.loads(stdout)
    assert set(report["references"]) == {"fp32", "same"} and report["references"]["same"]["precision"] == "fp16"
    for entry in report["references"].values():
        assert 1e-5 < entry["outputs"]["noise_pred"]["rel_l2"] < 1e-2
        assert 1e-5 < entry["trajectory"]["rel_l2"] < 2e-2
        assert len(entry["trajectory"]["noise_pred_rel_l2_per_step"]) == 3
        assert all(1e-5 < e < 1e-2 for e in entry["trajectory"]["noise_pred_rel_l2_per_step"])


@lru_cache(maxsize=None)
def four_block_export() -> Path:
    import subprocess
    import sys
    import tempfile

    from ptdit import preset

    out = Path(tempfile.mkdtemp(prefix="ptdit-diff-"))
    (out / "tiny4.json").write_text(preset("tiny").replace(name="tiny4", depth=4).to_json())
    subprocess.run([sys.executable, "-m", "export", "--config", str(out / "tiny4.json"), "--res", "256",
                    "--precision", "fp32", "--out", str(out), "--skip-checks"], check=True, capture_output=True)
    return out / "ptdit-tiny4-256-b2-fp32.onnx"


def corrupt_block(path: Path, block: int) -> None:
    """Scale one weight of one block by 1.05 in the ONNX file."""
    model = onnx.load(str(path))
    name = f"transformer_blocks.{block}.ff.net.2.weight"
    for i, init in enumerate(model.graph.initializer):
        if init.name == name:
            scaled = numpy_helper.to_array(init) * np.float32(1.05)
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(scaled, name))
            break
    else:
        raise AssertionError(f"{name} not in the graph")
    onnx.save(model, str(path))


@pytest.mark.slow  # a diff per corrupted block
@pytest.mark.parametrize("block", [1, 2])
def test_a_corrupted_block_is_found(tmp_path, block):
    source = four_block_export()
    for f in source.parent.glob(source.stem + ".*"):
        (tmp_path / f.name).write_bytes(f.read_bytes())
    path = tmp_path / source.name
    corrupt_block(path, block)
    code, stdout, _ = run(str(path), "--no-verify", "--steps", "2")
    assert code == 1
    entry = report_of(path)["references"]["fp32"]
    assert entry["first_divergent_block"] == block and entry["largest_jump_block"] == block
    errors = [m["rel_l2"] for m in entry["blocks"]]
    assert max(errors[:block]) < 1e-5 < min(errors[block:])
    assert f"first block over the rel L2 threshold: {block}" in stdout and "FAILED: noise_pred vs fp32" in stdout


def test_threshold_options_and_exit_code(tmp_path):
    path = artifact_copy(tmp_path, "fp32")
    code, stdout, _ = run(str(path), "--steps", "0", "--no-blocks", "--max-rel-l2", "1e-12")
    assert code == 1 and "relative L2" in stdout and "> 1e-12" in stdout
    report = report_of(path)
    assert report["thresholds"]["max_rel_l2"] == 1e-12 and "trajectory" not in report["references"]["fp32"]
    assert report["blocks_note"] == "per-block comparison off"
    code, _, stderr = run(str(path), "--steps", "0")  # other thresholds: the report does not hold this verdict
    assert code == 2 and "is stale and is not reused; pass --force to measure again" in stderr


@pytest.mark.parametrize(
    "setup,args,message",
    [
        ("no_manifest", [], "has no manifest"),
        ("weights_elsewhere", [], "are not available here"),
        ("mismatched_config", [], "is not the graph its manifest describes"),
        ("", ["--backend", "tensorrt"], "the tensorrt backend runs .plan files"),
    ],
)
def test_bad_input(tmp_path, setup, args, message):
    path = artifact_copy(tmp_path, "fp32")
    manifest_path = path.with_suffix(".json")
    manifest = json.loads(manifest_path.read_text())
    if setup == "no_manifest":
        manifest_path.unlink()
    elif setup == "weights_elsewhere":
        manifest["model"]["weights"] = {"source": "checkpoint", "path": str(tmp_path / "gone.pt"), "sha256": "0" * 64}
        manifest_path.write_text(json.dumps(manifest))
    elif setup == "mismatched_config":
        manifest["model"]["config"]["depth"] = 3
        manifest_path.write_text(json.dumps(manifest))
    code, _, stderr = run(str(path), "--steps", "1", *args)
    assert code == 2, stderr
    assert message in stderr and stderr.strip().splitlines()[-1].startswith("ptdit-diff: error:")
    assert not path.with_name(path.stem + ".diff.json").exists()


def with_external_data(path: Path) -> None:
    """Re-save a (small) artifact the way large ones are stored: weights in <name>.onnx.data; manifest updated."""
    from ptdit.contract.files import file_sha256

    model = onnx.load(str(path))
    onnx.save(model, str(path), save_as_external_data=True, location=path.name + ".data", size_threshold=1024)
    manifest_path = path.with_suffix(".json")
    manifest = json.loads(manifest_path.read_text())
    manifest["artifact"]["sha256"] = {f.name: file_sha256(f) for f in (path, path.with_name(path.name + ".data"))}
    manifest_path.write_text(json.dumps(manifest))


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_external_data_artifacts_run_from_their_own_directory(tmp_path, monkeypatch, precision):
    """The path large (xl) artifacts take: external weights, rewritten copies for the block outputs and the bf16
    twin, with the working directory holding a file of the same name as the weights (onnx checks the cwd)."""
    path = artifact_copy(tmp_path, precision)
    with_external_data(path)
    monkeypatch.chdir(tmp_path)
    code, _, stderr = run(str(path), "--steps", "1")
    assert code == 0, stderr
    entry = report_of(path)["references"]["fp32"]
    assert len(entry["blocks"]) == 2 and entry["outputs"]["noise_pred"]["rel_l2"] < 1e-1


def test_diff_artifact_is_the_python_face_of_ptdit_diff(tmp_path):
    """diff_artifact gives a typed result (the report, its path, what was written, up_to_date); ptdit-diff is a thin
    layer over it: the same options reuse the same report; a stale one is refused naming force=True (the command:
    --force); bad values are refused before any work, naming the parameter."""
    from ptdit.contract.errors import InputError
    from runtime import DiffResult, diff_artifact

    path = artifact_copy(tmp_path, "fp32")
    lines: list[str] = []
    result = diff_artifact(path, steps=2, blocks=False, progress=lines.append)
    assert isinstance(result, DiffResult) and result.passed and not result.up_to_date
    assert result.written == [result.report_path] and result.report == report_of(path)
    assert result.report["references"]["fp32"]["trajectory"]["steps"] == 2 and lines
    again = diff_artifact(str(path), steps=2, blocks=False, progress=lines.append)
    assert again.up_to_date and again.written == [] and again.report == result.report
    code, stdout, _ = run(str(path), "--steps", "2", "--no-blocks", "--json")  # the command reuses it too
    assert code == 0 and json.loads(stdout) == result.report
    with pytest.raises(InputError, match=r"is stale and is not reused; pass force=True to measure again"):
        diff_artifact(path, steps=3, blocks=False)
    for arguments, message in [(dict(reference="fp64"), "reference must be one of fp32, same, both"),
                               (dict(steps=-1), r"steps must be an integer in \[0, 1000\]"),
                               (dict(rtol=float("nan")), "rtol must be a finite number"),
                               (dict(out_dir=3), "out_dir must be a string or a path or None")]:
        with pytest.raises(InputError, match=message):
            diff_artifact(path, **arguments)
    assert sorted(p.name for p in tmp_path.glob("*.diff.*")) == [f"{path.stem}.diff.json"]
