"""What every command writes is published all together or not at all, under a lock, with the user's umask
(ptdit.contract.outputs): a run stopped before its commit, a killed run, an output of the other kind, another run
holding it, a location that cannot be written, a full disk."""

from __future__ import annotations

import contextlib
import os
import subprocess
from typing import Iterator

import pytest

from conftest import TINY, one_error_line, run_command
from ptdit.contract.errors import InputError
from ptdit.contract.outputs import Outputs


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


# Publishing: all or nothing, under a lock, with the user's umask.

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
        result = run_command("export", *TINY, "--out", str(directory / "sub"))
        assert result.returncode == 2 and "build tiny" not in result.stderr  # refused before the model is built
        one_error_line(result, "ptdit-export")
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(directory)])


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_full_disk_says_so_and_leaves_nothing(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        result = run_command("export", *TINY, "--checks", "none", "--out", str(disk / "out"))  # a 1.8 MB graph
        assert result.returncode == 1
        assert one_error_line(result, "ptdit-export").endswith("No space left on device; nothing was written")
        assert list(disk.iterdir()) == []
    finally:
        subprocess.run(["umount", str(disk)])
