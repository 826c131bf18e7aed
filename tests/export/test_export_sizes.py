"""ptdit-export --size: sizes of any aspect ratio on their class's grid, one static graph each, the weights of
several sizes stored once (a shared external-data file that onnx and ONNX Runtime read; TensorRT-RTX builds it in
tests/engines/test_real_engines.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from conftest import one_error_line, run_command
from export.options import sizes_of
from ptdit import PTDiT, preset
from ptdit.contract.errors import InputError
from ptdit.contract.sizes import Size, parse_size


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_sizes_are_read_as_width_x_height():
    assert parse_size("1280x720") == Size(height=720, width=1280) and str(Size(720, 1280)) == "1280x720"
    assert Size(720, 1280).name == "1280x720" and Size(1024, 1024).name == "1024"  # square names as before sizes
    for bad in ("1280", "1280x", "x720", "0x720", "-1x5", "1280*720", 1280):
        with pytest.raises(InputError, match="takes WIDTHxHEIGHT"):
            parse_size(bad)


def test_sizes_asked_for_come_in_order_once_and_default_to_1024():
    assert sizes_of(None, None) == [Size(1024, 1024)]
    assert sizes_of([512], ["768x512", "512x512"]) == [Size(512, 512), Size(512, 768)]
    common = sizes_of(None, ["1024:common"])  # 1:1, 16:9, 9:16, 4:3, 3:4 of the class's bins
    assert [str(s) for s in common] == ["1024x1024", "1408x768", "768x1408", "1152x896", "896x1152"]
    with pytest.raises(InputError, match="CLASS:common takes a class of 256, 512, 1024, 2048"):
        sizes_of(None, ["300:common"])


@pytest.mark.parametrize("args,message", [
    (["--size", "1280x720"], "size 1280x720 is not on the 1024 class's grid: each side must be a multiple of 128 "
                             "pixels (one 8 x 8 token window); nearest: 1280x640, 1280x768"),
    (["--size", "wide"], "expected WIDTHxHEIGHT in pixels (e.g. 1280x720) or CLASS:common"),
    (["--size", "64:common"], "CLASS:common takes a class of 256, 512, 1024, 2048"),
    (["--res", "300"], "'300' is not one of"),
])
def test_a_bad_size_is_one_line_and_writes_nothing(tmp_path, args, message):
    result = run_command("export", "--preset", "tiny", *args, "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    if args[0] == "--size" and ":" not in args[1] and "x" in args[1]:  # refused by the export (not click): one line
        assert message in one_error_line(result, "ptdit-export")
    assert not (tmp_path / "out").exists()


def test_the_python_face_takes_sizes(tmp_path):
    from export import export_model

    with pytest.raises(InputError, match="size 1280x720 is not on the 1024 class's grid"):
        export_model(size="1280x720", preset="tiny", out_dir=tmp_path)
    [result] = export_model(size=Size(256, 512), preset="tiny", precision="fp32", checks="none", out_dir=tmp_path)
    assert result.path.name == "ptdit-tiny-512x256-b2-fp32.onnx"
    export = result.manifest.export
    assert export.size == [256, 512] and export.resolution == 256 and export.image_size == Size(256, 512)
    assert [t.shape for t in result.manifest.inputs][0] == (2, 4, 32, 64)


@pytest.fixture(scope="module")
def two_sizes(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sizes")
    result = run_command("export", "--preset", "tiny", "--size", "512x256", "--size", "256x512", "--step",
                         "--precision", "fp32", "--checks", "none", "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out


def test_several_sizes_store_the_weights_once(two_sizes):
    names = sorted(p.name for p in two_sizes.iterdir())
    graphs = ["ptdit-tiny-512x256-b2-fp32", "ptdit-tiny-512x256-b2-fp32-step", "ptdit-tiny-256x512-b2-fp32",
              "ptdit-tiny-256x512-b2-fp32-step"]
    [shared] = [name for name in names if name.endswith(".onnx.data")]
    assert shared.startswith("ptdit-tiny-b2-fp32-weights-")  # named after the graphs that share it
    assert names == sorted([*(f"{g}.onnx" for g in graphs), *(f"{g}.json" for g in graphs), shared])
    model = PTDiT(preset("tiny"))
    parameter_bytes = 4 * sum(p.numel() for p in model.parameters())
    assert parameter_bytes < (two_sizes / shared).stat().st_size < 1.25 * parameter_bytes
    for graph in graphs:
        manifest = json.loads((two_sizes / f"{graph}.json").read_text())
        assert manifest["artifact"]["external_data"] == shared
        assert set(manifest["artifact"]["sha256"]) == {f"{graph}.onnx", shared}
        loaded = onnx.load(str(two_sizes / f"{graph}.onnx"))  # onnx reads every tensor at its offset
        onnx.checker.check_model(loaded, full_check=True)


@pytest.mark.parametrize("graph", ["ptdit-tiny-512x256-b2-fp32", "ptdit-tiny-256x512-b2-fp32"])
def test_each_size_equals_pytorch_through_onnx_runtime(two_sizes, graph):
    manifest = json.loads((two_sizes / f"{graph}.json").read_text())
    rng = np.random.default_rng(3)
    latent = rng.standard_normal(manifest["inputs"][0]["shape"], dtype=np.float32)
    feeds = {"latent": latent, "timestep": np.array([700.0, 700.0], np.float32),
             "text_embeds": rng.standard_normal((2, 200, 4096), dtype=np.float32),
             "text_mask": np.concatenate([np.ones((2, 50), np.int64), np.zeros((2, 150), np.int64)], axis=1)}
    out = ort.InferenceSession(str(two_sizes / f"{graph}.onnx"), providers=["CPUExecutionProvider"]).run(None, feeds)
    with torch.no_grad():
        ref = PTDiT(preset("tiny")).eval()(*(torch.from_numpy(feeds[k]) for k in feeds)).numpy()
    assert out[0].shape == ref.shape == (2, 8, *latent.shape[2:])
    assert rel_l2(out[0], ref) <= 1e-5


def test_a_later_run_of_other_sizes_never_changes_the_weights_of_these(two_sizes, tmp_path):
    """--force of one size with another: a weights file of its own; the graphs it does not export keep theirs."""
    import shutil

    out = tmp_path / "out"
    shutil.copytree(two_sizes, out)
    [before] = [p for p in out.iterdir() if p.name.endswith(".onnx.data")]
    kept = before.read_bytes()
    result = run_command("export", "--preset", "tiny", "--size", "512x256", "--size", "768x256", "--precision", "fp32",
                         "--checks", "none", "--force", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert before.read_bytes() == kept  # 256x512's graphs still point into it, unchanged
    manifest = json.loads((out / "ptdit-tiny-256x512-b2-fp32.json").read_text())
    assert manifest["artifact"]["external_data"] == before.name
    new = json.loads((out / "ptdit-tiny-512x256-b2-fp32.json").read_text())["artifact"]["external_data"]
    assert new != before.name and (out / new).is_file()
    from ptdit.contract.manifests import read_artifact_manifest

    read_artifact_manifest(out / "ptdit-tiny-256x512-b2-fp32.onnx")  # its files still match their sha256
