"""What every command shares: --version, and numbers checked while the command line is read (every numeric
option declares its range; NaN and infinity never pass), the same as the library checks them."""

from __future__ import annotations

import click
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import STEM
from ptdit.contract.cli_types import Number
from ptdit.contract.errors import InputError

# Numbers: checked before any work, NaN never passes.

def commands() -> list[tuple[str, click.Command]]:
    from bench.cli import main as bench
    from engines.cli import main as build
    from export.cli import main as export
    from runtime.bench import main as runtime_bench
    from runtime.cli.cache import main as cache
    from runtime.cli.diff import main as diff
    from runtime.cli.run import main as run_main

    found = [("ptdit-export", export), ("ptdit-build", build), ("ptdit-run", run_main), ("ptdit-diff", diff),
             ("python -m runtime.bench", runtime_bench)]
    assert isinstance(bench, click.Group) and isinstance(cache, click.Group)
    found += [(f"ptdit-cache {name}", command) for name, command in cache.commands.items()]
    return found + [(f"ptdit-bench {name}", command) for name, command in bench.commands.items()]


def test_every_command_says_its_version_and_the_versions_it_drives():
    from importlib import metadata

    import torch

    from ptdit.contract.cli_types import DRIVEN

    tops = [(prog, command) for prog, command in commands() if not prog.startswith(("ptdit-bench ", "ptdit-cache "))]
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
    from ptdit.contract.sizes import Size

    for kwargs, message in [({"batch": 1000}, "^batch must be an integer in"), ({"seed": -1}, "^seed must be")]:
        with pytest.raises(InputError, match=message):
            check_export_options(ExportOptions(preset("tiny"), [Size(256, 256)], **kwargs))
