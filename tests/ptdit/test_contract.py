"""The contract between the stages (ptdit.contract): manifests read and written one way, byte for byte, a missing
or mistyped field named in one line by every stage's reader, the exit codes of every command, the TensorRT
flavours and logger."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import artifact_copy, plan_manifest_for
from ptdit.contract.commands import exit_codes
from ptdit.contract.dtypes import precision_of_element_type, tensorrt_dtype_name
from ptdit.contract.errors import Failure, InputError
from ptdit.contract.files import json_text
from ptdit.contract.interrupts import Terminated
from ptdit.contract.manifests import read_artifact_manifest, read_manifest, write_manifest
from ptdit.contract.pipeline_manifest import PipelineManifest
from ptdit.contract.plan_manifest import BuildOptions
from ptdit.contract.records import Record, RecordError, optional
from ptdit.contract.tensorrt import import_flavour, logger_for
from runtime.artifact import load_artifact

ROOT = Path(__file__).resolve().parents[2]


def test_manifests_are_written_back_byte_for_byte(tmp_path):
    onnx_path = artifact_copy(tmp_path)
    original = onnx_path.with_suffix(".json").read_text()
    write_manifest(tmp_path / "again.json", read_artifact_manifest(onnx_path))
    assert (tmp_path / "again.json").read_text() == original
    plan = tmp_path / "m.plan"
    plan.write_bytes(b"plan bytes")
    manifest = plan_manifest_for(onnx_path, plan, weight_streaming=True)
    write_manifest(plan.with_suffix(".json"), manifest)
    again = read_artifact_manifest(plan)
    assert again == manifest and again.build.options.weight_streaming and again.export == manifest.export


@dataclass(frozen=True)
class Section(Record):
    size: int
    where: Path
    label: str | None = optional()


@dataclass(frozen=True)
class Outer(Record):
    sections: list[Section]
    shape: tuple[int, ...]


def test_records_convert_and_name_the_bad_field():
    data = {"sections": [{"size": 2, "where": "/a"}], "shape": [1, 2]}
    outer = Outer.from_dict(data)
    assert outer == Outer([Section(2, Path("/a"))], (1, 2))
    assert outer.to_dict() == data  # the optional field at its default is left out
    assert Section(1, Path("b"), "x").to_dict() == {"size": 1, "where": "b", "label": "x"}
    for bad, message in [({"shape": [1]}, "'sections' is missing"),
                         ({"sections": [{"size": "2", "where": "/a"}], "shape": []}, "'sections[0].size' is str"),
                         ({"sections": [{"size": True, "where": "/a"}], "shape": []}, "expected int"),
                         ({"sections": {}, "shape": []}, "'sections' is dict, expected a list")]:
        with pytest.raises(RecordError, match=message.replace("[", r"\[").replace("]", r"\]")):
            Outer.from_dict(bad)


def edit_manifest(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("edit,message", [
    (lambda m: m["export"].pop("batch"), "'export.batch' is missing"),
    (lambda m: m["inputs"][0].update(shape="big"), "'inputs[0].shape' is str, expected a list"),
    (lambda m: m["model"].pop("weights"), "'model.weights' is missing"),
])
def test_a_missing_or_mistyped_field_is_named(tmp_path, edit, message):
    onnx_path = artifact_copy(tmp_path)
    edit_manifest(onnx_path.with_suffix(".json"), edit)
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        read_artifact_manifest(onnx_path, verify=False)


def test_every_stage_refuses_a_manifest_with_a_missing_field_in_one_line(tmp_path):
    """The runtime (ptdit-run) and the engines stage (ptdit-build) read the same manifest the same way: one
    line, exit 2, the field named, nothing written."""
    onnx_path = artifact_copy(tmp_path)
    edit_manifest(onnx_path.with_suffix(".json"), lambda m: m["export"].pop("batch"))
    before = sorted(p.name for p in tmp_path.iterdir())
    for command in (["runtime", str(onnx_path), "--random-text", "--out", str(tmp_path / "l.npy")],
                    ["engines", str(onnx_path), "--target", "rtx"]):
        result = subprocess.run([sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, result.stderr
        assert "'export.batch' is missing; re-export it with ptdit-export" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_manifests_of_earlier_versions_are_still_read(tmp_path):
    """Exports made before step graphs have no export.graph / export.step; plans built then without --mark-blocks
    have "block_outputs": null. The schemas are the same: they are read as noise-prediction artifacts."""
    onnx_path = artifact_copy(tmp_path)
    edit_manifest(onnx_path.with_suffix(".json"), lambda m: [m["export"].pop(k) for k in ("graph", "step")])
    artifact = load_artifact(onnx_path)
    assert not artifact.is_step and artifact.export.graph == "noise_prediction"
    plan = tmp_path / "m.plan"
    plan.write_bytes(b"plan bytes")
    write_manifest(plan.with_suffix(".json"), plan_manifest_for(onnx_path, plan))
    edit_manifest(plan.with_suffix(".json"), lambda m: m.update(block_outputs=None))
    assert load_artifact(plan).block_outputs.names == []


def test_a_pipeline_manifest_without_its_tiles_is_refused_in_one_line(tmp_path, pipelines):
    folder = tmp_path / "folder"
    shutil.copytree(pipelines[256], folder)
    edit_manifest(folder / "pipeline.json", lambda m: m["vae_decoder"].pop("tiles"))
    with pytest.raises(InputError, match="'vae_decoder.tiles' is missing; re-export the pipeline"):
        read_manifest(PipelineManifest, folder / "pipeline.json", "this folder", "")


@pytest.mark.parametrize("raised,code,line", [
    (InputError("bad --steps"), 2, "prog: error: bad --steps"),
    (Failure("the build failed"), 1, "prog: error: the build failed; nothing was written"),
    (KeyboardInterrupt(), 130, "prog: error: interrupted; nothing was written"),
    (Terminated(), 143, "prog: error: terminated; nothing was written"),
    (OSError(errno.ENOSPC, "No space left on device", "/big/x.onnx"), 1,
     "prog: error: /big/x.onnx: No space left on device; nothing was written"),
    (ModuleNotFoundError("no onnxruntime", name="onnxruntime"), 2,
     "prog: error: missing package 'onnxruntime': install it with pip install onnxruntime-gpu"),
    (ValueError("odd"), 1, "prog: error: ValueError: odd (rerun with --debug for the traceback)"),
])
def test_every_command_ends_the_same_way(capsys, raised, code, line):
    with pytest.raises(SystemExit) as ended:
        with exit_codes("prog"):
            raise raised
    assert ended.value.code == code and capsys.readouterr().err.strip() == line


def test_debug_shows_the_traceback_of_an_unexpected_error():
    with pytest.raises(ValueError, match="odd"):
        with exit_codes("prog", debug=True):
            raise ValueError("odd")


def test_build_options_identity_leaves_the_timing_cache_out():
    assert "timing_cache" not in BuildOptions(timing_cache=Path("c")).comparable()


def test_dtype_names():
    assert tensorrt_dtype_name("HALF") == "float16" and tensorrt_dtype_name("FP4") == "fp4"
    assert [precision_of_element_type(t) for t in (1, 10, 16, 7)] == ["fp32", "fp16", "bf16", None]


def test_one_logger_per_tensorrt_module_for_every_stage():
    """The export's parse check, the builder and the runtime get the same logger from one TensorRT module: TensorRT
    keeps the first one it is given for the whole process."""
    trt = pytest.importorskip("tensorrt_rtx")
    import export.checks.tensorrt_parse as parse

    lines: list[str] = []
    builder_logger = logger_for(trt, lines.append)
    found = parse.find_builder()
    assert found is not None and found[3] is builder_logger
    for _ in range(30):
        builder_logger.log(trt.ILogger.Severity.ERROR, "an error")
    assert len(builder_logger.errors) == 20  # only the last errors are kept
    assert import_flavour("rtx") is trt and json_text({"b": 1, "a": 2}) == '{\n  "a": 2,\n  "b": 1\n}\n'


def test_one_reuse_rule_for_every_output():
    """Existing: absent, current with what was read of it, or stale with why; a stale one is refused in one
    sentence, naming force=True as the caller knows it (--force on a command line)."""
    from ptdit.contract.errors import InputError
    from ptdit.contract.reuse import Existing

    Existing.absent().refuse_if_stale("replace it")
    assert Existing.current({"a": 1}).found == {"a": 1} and Existing.absent().found is None
    with pytest.raises(InputError) as error:
        Existing.stale("x.onnx was exported with other settings (seed differ)").refuse_if_stale("replace it")
    assert str(error.value) == ("x.onnx was exported with other settings (seed differ): it is stale and is not reused; "
                                "pass force=True to replace it")
    assert error.value.render().endswith("pass --force to replace it")
