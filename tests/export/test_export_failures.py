"""ptdit-export where real users push: SIGTERM between two graphs, two exports to one place, options that do
not apply."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import STEM, TINY, one_error_line, run_command

ROOT = Path(__file__).resolve().parents[2]


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


@pytest.mark.slow  # two exports
def test_two_concurrent_exports_to_one_place_one_refuses(tmp_path):
    """The first run (two graphs: seconds of work after its claim) is still running when the second claims."""
    first = subprocess.Popen([sys.executable, "-m", "export", *TINY, "--step", "--checks", "none", "--seed", "1",
                              "--out", str(tmp_path)], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    assert first.stderr is not None
    for line in first.stderr:
        if "build tiny" in line:  # its outputs are claimed before the model is built
            break
    second = run_command("export", *TINY, "--checks", "none", "--seed", "2", "--out", str(tmp_path))
    first.stderr.read()
    assert first.wait(timeout=120) == 0
    assert second.returncode == 2
    assert "is being written by another run" in one_error_line(second, "ptdit-export")
    manifest = json.loads((tmp_path / f"{STEM}.json").read_text())
    assert manifest["model"]["weights"]["seed"] == 1


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
