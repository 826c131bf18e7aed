"""Where real users push (issue 19): outputs published all together or not at all, under a lock, with the user's
umask; SIGINT and SIGTERM; a full disk and a read-only location; numbers out of range or not finite; NaN results;
and inputs that lie (files swapped, manifests edited and re-stamped, files cut short, bytes that are not text).
The tiny pipeline folders of tests/conftest.py (with their transformer artifacts) are shared."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import click
import numpy as np
import pytest
from click.testing import CliRunner

from ptdit.contract.cli_types import Number
from ptdit.contract.errors import InputError
from ptdit.contract.files import file_sha256
from ptdit.contract.outputs import Outputs

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--preset", "tiny", "--res", "256"]
STEM = "ptdit-tiny-256-b2-fp16"


COMMANDS = {"export": "export.cli", "engines": "engines.cli", "runtime": "runtime.cli.run", "diff": "runtime.cli.diff"}


@dataclass
class Ran:
    returncode: int
    stderr: str


def run(module: str, *args: str) -> Ran:
    """A command run in this process through its click entry point (ptdit-export, ptdit-build, ptdit-run,
    ptdit-diff): its exit code and stderr, as a shell sees them. Signals and concurrency use real processes."""
    result = CliRunner().invoke(importlib.import_module(COMMANDS[module]).main, list(args))
    return Ran(result.exit_code, result.stderr)


def one_error_line(result: Ran, prog: str) -> str:
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith(f"{prog}: error: ")]
    assert len(lines) == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1] == lines[0], result.stderr  # the last line, no traceback after
    return lines[0]


@pytest.fixture
def folder(pipelines: dict[int, Path]) -> Path:
    """The tiny pipeline folder at 256 (tests/conftest.py), whose transformer is a plain export."""
    return pipelines[256]


def copy_artifact(source: Path, stem: str, to: Path) -> Path:
    to.mkdir(exist_ok=True)
    for f in source.glob(f"{stem}.*"):
        shutil.copy(f, to / f.name)
    return to / f"{stem}.onnx"


def edit_json(path: Path, edit: object) -> None:
    data = json.loads(path.read_text())
    edit(data)  # type: ignore[operator]
    path.write_text(json.dumps(data))


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


# 1. Publishing: all or nothing, under a lock, with the user's umask.

def test_outputs_appear_together_at_commit_with_the_users_umask(tmp_path):
    out = tmp_path / "new" / "dir"
    with umask(0o027), Outputs() as outputs:
        folder = outputs.claim(out / "folder", folder=True)
        data = outputs.claim(out / "a.bin")
        folder.mkdir()
        (folder / "f").write_text("x")
        data.write_bytes(b"1")
        assert sorted(p.name for p in out.iterdir()) == sorted([".folder.lock", ".a.bin.lock",
                                                                 next(out.glob(".folder.partial.*")).name])
        assert outputs.commit() == [out / "folder", out / "a.bin"]
    assert sorted(p.name for p in out.iterdir()) == ["a.bin", "folder"]  # no lock, no temporary folder left
    assert (out / "folder").stat().st_mode & 0o777 == 0o750 and (out / "a.bin").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o750


def test_a_run_that_stops_before_commit_leaves_nothing_not_even_its_directories(tmp_path):
    (tmp_path / "keep").mkdir()
    with pytest.raises(KeyboardInterrupt), Outputs() as outputs:
        outputs.claim(tmp_path / "keep" / "made" / "x.plan").write_bytes(b"half")
        outputs.claim(tmp_path / "keep" / "made" / "triton" / "deeper" / "m", folder=True).mkdir()
        raise KeyboardInterrupt
    assert list(tmp_path.rglob("*")) == [tmp_path / "keep"]


def test_what_a_killed_run_left_is_cleared_and_temporary_names_are_shown_as_their_destinations(tmp_path):
    from ptdit.contract.outputs import shown

    left = tmp_path / ".x.json.partial.dead"  # a run killed with SIGKILL: its lock died with it
    left.mkdir()
    (left / "x.json").write_text("half")
    with Outputs() as outputs:
        staged = outputs.claim(tmp_path / "x.json")
        assert not left.exists()
        assert shown(staged) == str(tmp_path / "x.json")


def test_an_output_of_the_other_kind_is_never_replaced(tmp_path):
    (tmp_path / "x.png").mkdir()
    (tmp_path / "folder").write_text("a file")
    with pytest.raises(InputError, match="x.png is a folder, and this output is a file: choose another name"):
        Outputs(force=True).claim(tmp_path / "x.png")
    with pytest.raises(InputError, match="folder is a file, and this output is a folder"):
        Outputs(force=True).claim(tmp_path / "folder", folder=True)
    assert (tmp_path / "x.png").is_dir() and (tmp_path / "folder").read_text() == "a file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "x.png"]  # locks released


def test_an_output_held_by_another_run_is_refused_and_existing_ones_need_force(tmp_path):
    target = tmp_path / "x.json"
    with Outputs() as first:
        first.claim(target).write_text("first")
        with pytest.raises(InputError, match=rf"x.json is being written by another run \(pid {os.getpid()}\)"):
            Outputs().claim(target)
        first.commit()
    with pytest.raises(InputError, match="already exists; pass force=True"):
        Outputs().claim(target)
    with Outputs(force=True) as again:  # the set replaces the old one: an output it does not make is removed
        again.claim(target)
        again.claim(stale := tmp_path / "x.onnx.data")
        stale.write_bytes(b"old")
        again.commit()
    assert not target.exists() and not stale.exists()


def test_a_location_that_cannot_be_written_is_refused_before_the_work(tmp_path):
    directory = tmp_path / "ro"
    directory.mkdir()
    if os.geteuid() == 0:  # root writes through permissions: make it a read-only mount
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(directory)]).returncode:
            pytest.skip("cannot mount a read-only tmpfs here")
    else:
        directory.chmod(0o555)
    try:
        with pytest.raises(InputError, match="choose a writable output location|choose another location"):
            Outputs().claim(directory / "sub" / "x.onnx")
        result = run("export", *TINY, "--out", str(directory / "sub"))
        assert result.returncode == 2 and "build tiny" not in result.stderr  # refused before the model is built
        one_error_line(result, "ptdit-export")
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(directory)])


@pytest.mark.slow  # exports two graphs
def test_sigterm_during_the_second_graph_publishes_nothing(tmp_path):
    """--step writes two graphs; stopped while the second is traced, neither is published, and the run's
    directories are gone. (SIGINT takes the same path: tests/engines/test_real_engines.py sends both to a build.)"""
    signum = signal.SIGTERM
    out = tmp_path / "made" / "out"
    process = subprocess.Popen([sys.executable, "-m", "export", *TINY, "--step", "--checks", "none", "--out",
                                str(out)], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    for line in process.stderr:
        if "the denoising step" in line:
            break
    time.sleep(1.0)  # inside the trace of the step graph (seconds)
    process.send_signal(signum)
    rest = process.stderr.read()
    assert process.wait(timeout=60) == 128 + signum, rest
    assert rest.strip().splitlines()[-1] == "ptdit-export: error: terminated; nothing was written"
    assert not (tmp_path / "made").exists()


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


@pytest.mark.slow  # two exports
def test_two_concurrent_exports_to_one_place_one_refuses(tmp_path):
    """The first run (two graphs: seconds of work after its claim) is still running when the second claims."""
    first = subprocess.Popen([sys.executable, "-m", "export", *TINY, "--step", "--checks", "none", "--seed", "1",
                              "--out", str(tmp_path)], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    assert first.stderr is not None
    for line in first.stderr:
        if "build tiny" in line:  # its outputs are claimed before the model is built
            break
    second = run("export", *TINY, "--checks", "none", "--seed", "2", "--out", str(tmp_path))
    first.stderr.read()
    assert first.wait(timeout=120) == 0
    assert second.returncode == 2
    assert "is being written by another run" in one_error_line(second, "ptdit-export")
    manifest = json.loads((tmp_path / f"{STEM}.json").read_text())
    assert manifest["model"]["weights"]["seed"] == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_full_disk_says_so_and_leaves_nothing(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        result = run("export", *TINY, "--checks", "none", "--out", str(disk / "out"))  # a 1.8 MB graph
        assert result.returncode == 1
        assert one_error_line(result, "ptdit-export").endswith("No space left on device; nothing was written")
        assert list(disk.iterdir()) == []
    finally:
        subprocess.run(["umount", str(disk)])


# 2. Numbers: checked before any work, NaN never passes.

def commands() -> list[tuple[str, click.Command]]:
    from bench.cli import main as bench
    from engines.cli import main as build
    from export.cli import main as export
    from runtime.bench import main as runtime_bench
    from runtime.cli.diff import main as diff
    from runtime.cli.run import main as run_main

    found = [("ptdit-export", export), ("ptdit-build", build), ("ptdit-run", run_main), ("ptdit-diff", diff),
             ("python -m runtime.bench", runtime_bench)]
    assert isinstance(bench, click.Group)
    return found + [(f"ptdit-bench {name}", command) for name, command in bench.commands.items()]


def test_every_command_says_its_version_and_the_versions_it_drives():
    from importlib import metadata

    import torch

    from ptdit.contract.cli_types import DRIVEN

    tops = [(prog, command) for prog, command in commands() if not prog.startswith("ptdit-bench ")]
    from bench.cli import main as bench

    for prog, command in [*tops, ("ptdit-bench", bench)]:
        result = CliRunner().invoke(command, ["--version"])
        lines = result.output.splitlines()
        assert result.exit_code == 0 and lines[0] == f"ptdit-deploy {metadata.version('ptdit-deploy')}", prog
        assert f"  torch: {torch.__version__}" in lines and len(lines) == 1 + len(DRIVEN), result.output


def test_every_numeric_option_declares_its_range_and_refuses_what_is_outside_it():
    """Every int or float option of every command is a Number with its range, and nan, inf and the values just
    outside the range are refused while the command line is read (exit 2, the range named)."""
    untyped, refused = [], []
    for prog, command in commands():
        required = []
        for p in command.params:
            if p.required and not isinstance(p.type, Number):
                required += [p.opts[0], "x.onnx"] if isinstance(p, click.Option) else ["x.onnx"]
        for p in command.params:
            if isinstance(p.type, (click.types.IntParamType, click.types.FloatParamType)):
                untyped.append(f"{prog} {p.opts[0]}")
            if not isinstance(p.type, Number):
                continue
            accepted = p.type.accepted
            bad = ["nan", "inf", "-inf", "1e400"]
            if accepted.low is not None:
                bad.append(str(accepted.low - 1) if accepted.integer else str(accepted.low - 1e-3 if not
                                                                             accepted.low_open else accepted.low))
            if accepted.high is not None:
                bad.append(str(int(accepted.high) + 1) if accepted.integer else str(accepted.high * 2))
            for value in bad:
                result = CliRunner().invoke(command, [*required, p.opts[0], value])
                if result.exit_code != 2 or accepted.describe() not in result.output:
                    refused.append(f"{prog} {p.opts[0]} {value}: exit {result.exit_code}")
    assert not untyped and not refused, (untyped, refused)


def test_ranges_take_numpy_numbers_and_refuse_ints_no_float_can_hold():
    from ptdit.contract.numbers import SEED, STEPS

    assert STEPS.accepts(np.int64(5)) and not STEPS.accepts(5.0) and not STEPS.accepts(True)
    assert not SEED.accepts(10 ** 400)
    from runtime.cli.run import main

    result = CliRunner().invoke(main, ["x.onnx", "--out", "x.npy", "--seed", "1" + "0" * 400])
    assert result.exit_code == 2 and "is not an integer in [0, 2^32 - 1]" in result.output


def test_the_library_refuses_what_the_command_line_refuses(folder):
    from runtime.diff.metrics import Thresholds
    from runtime.sampling.host_loop import Sampler
    from runtime.session import open_session

    with open_session(str(folder / f"{STEM}.onnx")) as session:
        for kwargs, message in [({"guidance": float("nan")}, "^guidance must be a finite number"),
                                ({"steps": 10 ** 20}, "^steps must be an integer in"),
                                ({"seed": -1}, "^seed must be an integer in"),
                                ({"shift": -1.0}, "^shift must be a finite number in")]:
            with pytest.raises(InputError, match=message):
                Sampler(session, **kwargs)
    with pytest.raises(InputError, match="max_rel_l2 must be a finite number in"):
        Thresholds(rtol=1e-3, atol=1e-3, max_rel_l2=float("nan"), max_trajectory_rel_l2=1.0)
    from export.options import ExportOptions, check_export_options
    from ptdit import preset

    for kwargs, message in [({"batch": 1000}, "^batch must be an integer in"), ({"seed": -1}, "^seed must be")]:
        with pytest.raises(InputError, match=message):
            check_export_options(ExportOptions(preset("tiny"), [256], **kwargs))


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
    result = run("runtime", str(folder / f"{STEM}.onnx"), "--text", str(tmp_path / "huge.npy"),
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
    result = run("runtime", str(folder), "--prompt", "x", "--steps", "1", "--out",
                 str(tmp_path / "x.png"))
    assert result.returncode == 2 and "encode:" not in result.stderr
    line = one_error_line(result, "ptdit-run")
    assert "do not fit each other" in line and "the transformer is for 1024 px" in line and "VAE decoder" in line


def test_a_truncated_negative_embedding_is_one_line(folder, tmp_path):
    folder = lying_pipeline(folder, tmp_path)
    negative = folder / "negative.npz"
    negative.write_bytes(negative.read_bytes()[:1000])
    result = run("runtime", str(folder), "--prompt", "x", "--no-verify", "--out", str(tmp_path / "x.png"))
    assert result.returncode == 2
    assert "negative.npz is not a readable .npz file (BadZipFile" in one_error_line(result, "ptdit-run")


def test_a_nan_in_the_stored_negative_prompt_names_its_file_not_an_option(folder, tmp_path):
    folder = lying_pipeline(folder, tmp_path)
    with np.load(folder / "negative.npz") as stored:
        arrays = dict(stored)
    arrays["text_embeds"].flat[:7] = np.nan
    np.savez(folder / "negative.npz", **arrays)
    restamp(folder)
    result = run("runtime", str(folder), "--prompt", "x", "--steps", "1", "--out", str(tmp_path / "x.png"))
    assert result.returncode == 2 and "encode:" not in result.stderr
    line = one_error_line(result, "ptdit-run")
    assert f"{folder / 'negative.npz'} (the folder's stored negative prompt) holds 7 NaN or infinite values" in line
    assert "re-export the folder with ptdit-export --pipeline" in line and "--negative-prompt" not in line


def test_a_prompt_that_is_not_utf8_is_refused(folder, tmp_path):
    result = run("runtime", str(folder), "--prompt", os.fsdecode(b"a \xff fox"), "--out",
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
        result = run(module, *args)
        assert result.returncode == 2, result.stderr
        line = one_error_line(result, prog)
        assert f"{onnx_path.name} is not the graph its manifest describes (" in line
        assert f"the graph records another {record})" in line or (prog == "ptdit-diff" and "depth 3" in line)
    assert not list(tmp_path.glob("*.diff.*")) and not (tmp_path / "l.npy").exists()


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
        result = run("engines", str(onnx_path), "--target", "rtx", "--out", str(tmp_path / "plans"))
        assert result.returncode == 2, result.stderr
        assert message in one_error_line(result, "ptdit-build") and "parse" not in result.stderr
        assert not (tmp_path / "plans").exists()


@pytest.mark.parametrize("args,message", [
    (["--weight-budget", "1G"], "a weight budget applies to a TensorRT plan only"),
    (["--lean-runtime", "libnvinfer_lean.so", "--runtime-cache-dir", "c"],
     "a runtime cache directory and a lean runtime apply to a TensorRT plan only"),
])
def test_options_that_do_not_apply_to_the_artifact_are_refused(folder, tmp_path, args, message):
    result = run("runtime", str(folder / f"{STEM}.onnx"), "--random-text", "--steps", "1",
                 "--out", str(tmp_path / "l.npy"), *args)
    assert result.returncode == 2 and message in one_error_line(result, "ptdit-run")


def test_export_options_that_do_not_apply_are_refused(tmp_path):
    from export.cli import main

    result = CliRunner().invoke(main, [*TINY, "--checkpoint-key", "ema", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--checkpoint-key names a state dict inside --checkpoint" in result.output
    for args, message in ((["--vae-precision", "fp16"], "--vae-precision goes with --pipeline: add --pipeline, or "
                                                        "drop it"),
                          (["--skip-checks", "--checks", "full"], "--skip-checks is --checks none, and --checks full "
                                                                  "asks for checks: pass one")):
        result = CliRunner().invoke(main, [*TINY, *args, "--out", str(tmp_path / "o")])
        assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("case,message", [
    ("blocks_plan_on_onnx", "a blocks plan (--blocks-plan) is for the per-block comparison of a plan artifact"),
    ("gates_on_a_folder", "--rtol, --max-rel-l2 apply to an .onnx or .plan"),
    ("cpu_for_a_plan", "is a TensorRT plan, which runs on the GPU only: drop device cpu"),
])
def test_diff_and_run_options_that_do_not_apply_are_refused(folder, tmp_path, case, message):
    if case == "blocks_plan_on_onnx":
        result = run("diff", str(folder / f"{STEM}.onnx"), "--blocks-plan", "x.plan", "--out", str(tmp_path))
    elif case == "gates_on_a_folder":
        result = run("diff", str(folder), "--rtol", "0.1", "--max-rel-l2", "0.1", "--out", str(tmp_path))
    else:
        from test_runtime import fake_plan

        result = run("runtime", str(fake_plan(tmp_path)), "--random-text", "--device", "cpu", "--out",
                     str(tmp_path / "l.npy"))
    assert result.returncode == 2 and message in one_error_line(result, "ptdit-diff" if case != "cpu_for_a_plan"
                                                                 else "ptdit-run")
    assert not list(tmp_path.glob("*.diff.*")) and not (tmp_path / "l.npy").exists()
