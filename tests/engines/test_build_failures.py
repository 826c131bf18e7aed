"""ptdit-build refuses an ONNX that is not the one its manifest describes, before TensorRT is loaded."""

from __future__ import annotations

from conftest import STEM, copy_artifact, edit_json, one_error_line, run_command
from ptdit.contract.files import file_sha256


def test_ptdit_build_refuses_what_is_not_the_manifests_onnx_before_tensorrt(folder, tmp_path):
    from onnx import TensorProto, helper

    onnx_path = copy_artifact(folder, STEM, tmp_path)
    manifest = onnx_path.with_suffix(".json")

    def restamped(content: bytes) -> None:
        onnx_path.write_bytes(content)
        edit_json(manifest, lambda d: d["artifact"]["sha256"].update({onnx_path.name: file_sha256(onnx_path)}))

    real = onnx_path.read_bytes()
    foreign = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "foreign",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [1, 8])]))
    for content, message in [(b"not a model at all\n", "is not an ONNX model"),
                             (real[: len(real) // 2], "is not an ONNX model"),
                             (foreign.SerializeToString(), "the graph's I/O is not the manifest's")]:
        restamped(content)
        result = run_command("engines", str(onnx_path), "--target", "rtx", "--out", str(tmp_path / "plans"))
        assert result.returncode == 2, result.stderr
        assert message in one_error_line(result, "ptdit-build") and "parse" not in result.stderr
        assert not (tmp_path / "plans").exists()


def test_several_onnx_are_checked_before_the_first_build(folder, tmp_path):
    onnx = str(folder / f"{STEM}.onnx")
    missing = run_command("engines", onnx, str(tmp_path / "nothing.onnx"), "--target", "rtx", "--out", str(tmp_path))
    assert f"{tmp_path / 'nothing.onnx'} does not exist" in one_error_line(missing, "ptdit-build")
    twice = run_command("engines", onnx, onnx, "--target", "rtx", "--out", str(tmp_path))
    assert "an ONNX is named twice" in one_error_line(twice, "ptdit-build")
    repo = run_command("engines", onnx, str(folder / "pipeline.json"), "--target", "rtx", "--triton-repo",
                       str(tmp_path / "repo"), "--out", str(tmp_path))
    assert "--triton-repo writes the repository of one plan" in one_error_line(repo, "ptdit-build")
    assert missing.returncode == twice.returncode == repo.returncode == 2
    assert not list(tmp_path.iterdir())  # nothing built, nothing written
