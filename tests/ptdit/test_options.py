"""Each stage's options are declared once (ptdit.contract.options): the command's flags, the Python face's keywords
and the check of each value all come from the declaration, so they cannot drift apart."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from ptdit.contract.arguments import checked
from ptdit.contract.cli_types import declared_options
from ptdit.contract.errors import InputError
from ptdit.contract.numbers import Range
from ptdit.contract.options import Option, Options

TOY = Options(
    Option("steps", int, 30, "Steps.", accepted=Range(1, 100, integer=True), show_default=True),
    Option("mode", str, "fast", "Mode.", choices=("fast", "full")),
    Option("size", int | list[int], 256, "Sizes.", flag="--res", choices=(256, 512), multiple=True),
    Option("out_dir", "str | Path | None", None, "Where.", flag="--out", kind="folder"),
    Option("verify", bool, True, "Skip the check.", flag="--no-verify"),
    Option("shout", bool, False, "Shout.", python=False),
)


@checked(options=TOY)
def toy(first: str, size: Any = None, *, progress: Any = None, **options: Any) -> dict[str, Any]:
    return {"first": first, "size": size, "progress": progress, **options}


def test_the_python_face_takes_the_declared_keywords_with_their_defaults_and_checks():
    parameters = inspect.signature(toy).parameters
    assert list(parameters) == ["first", "size", "steps", "mode", "out_dir", "verify", "progress"]
    assert parameters["size"].default == 256 and parameters["size"].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert parameters["steps"].kind is inspect.Parameter.KEYWORD_ONLY and parameters["steps"].default == 30
    assert toy("a") == {"first": "a", "size": 256, "progress": None, "steps": 30, "mode": "fast", "out_dir": None,
                        "verify": True}
    assert toy("a", [256, 512], steps=3)["size"] == [256, 512]
    for call, message in [(lambda: toy("a", steps=0), r"^steps must be an integer in \[1, 100\], got 0$"),
                          (lambda: toy("a", steps="3"), r"^steps must be an integer, got str '3'$"),
                          (lambda: toy("a", mode="slow"), r"^mode must be one of fast, full, got 'slow'$"),
                          (lambda: toy("a", [256, 300]), r"^size must be one of 256, 512, got 300$"),
                          (lambda: toy("a", verify="yes"), r"^verify must be True or False")]:
        with pytest.raises(InputError, match=message):
            call()
    with pytest.raises(TypeError, match="shout"):  # a command's own option is no keyword of the Python face
        toy("a", shout=True)


def test_the_command_takes_the_declared_flags_with_the_same_checks():
    @click.command()
    @declared_options(TOY)
    def command(**values: Any) -> None:
        click.echo(repr(sorted(values.items())))

    runner = CliRunner()
    shown = runner.invoke(command, ["--res", "512", "--res", "256", "--out", "x", "--no-verify", "--shout"])
    assert shown.exit_code == 0, shown.output
    assert shown.output.strip() == repr(sorted({"steps": 30, "mode": "fast", "size": (512, 256), "out_dir": Path("x"),
                                                "verify": False, "shout": True}.items()))
    for args, message in [(["--steps", "0"], "'0' is not an integer in [1, 100]"),
                          (["--mode", "slow"], "'slow' is not one of 'fast', 'full'"),
                          (["--res", "300"], "'300' is not one of '256', '512'")]:
        refused = runner.invoke(command, args)
        assert refused.exit_code == 2 and message in refused.output, refused.output
    help_text = runner.invoke(command, ["--help"]).output
    assert "--no-verify" in help_text and "Skip the check." in help_text and "[default: 30]" in help_text


def declared_commands() -> list[tuple[click.Command, Options]]:
    from engines.cli import main as build
    from engines.options import BUILD
    from export.cli import main as export
    from export.options import EXPORT
    from runtime.cli.diff import main as diff
    from runtime.cli.run import RUN
    from runtime.cli.run import main as run
    from runtime.diff.api import DIFF

    return [(export, EXPORT), (build, BUILD), (run, RUN), (diff, DIFF)]


EVERY_COMMAND = {"as_json", "debug", "quiet", "verbose", "version", "artifact", "artifact_option", "onnx_paths"}


@pytest.mark.parametrize("index", range(4), ids=["ptdit-export", "ptdit-build", "ptdit-run", "ptdit-diff"])
def test_every_option_of_the_stage_commands_is_declared(index):
    command, options = declared_commands()[index]
    params = {p.name: p for p in command.params if p.name not in EVERY_COMMAND}
    assert list(params) == options.command().names()
    for declared in options.command():
        param = params[declared.name]
        assert param.opts == [declared.cli_flag] and param.help == declared.help
        assert param.required == declared.required, declared.name
        if declared.required:
            continue
        default = param.default
        if declared.multiple:
            assert list(default) == ([] if declared.default is None else
                                     list(declared.default) if isinstance(declared.default, tuple)
                                     else [declared.default])
        elif declared.kind in ("file", "folder", "path") and default is not None:
            assert Path(default) == Path(declared.default)
        else:
            assert default == declared.default, declared.name


def test_every_python_face_takes_its_declared_keywords():
    from engines import build_engine
    from engines.options import BUILD
    from export import export_model, export_pipeline
    from export.options import EXPORT, EXPORT_MODEL
    from runtime import PTDiTPipeline, diff_artifact
    from runtime.diff.api import DIFF
    from runtime.run_options import SESSION

    for function, options in [(export_model, EXPORT_MODEL), (export_pipeline, EXPORT), (build_engine, BUILD),
                              (diff_artifact, DIFF), (PTDiTPipeline.from_folder, SESSION),
                              (PTDiTPipeline.from_artifact, SESSION)]:
        parameters = inspect.signature(function).parameters
        for declared in options.python():
            assert parameters[declared.name].default == declared.default, (function.__name__, declared.name)
        assert not set(parameters) & {o.name for o in options if not o.python}
    assert "vae" not in inspect.signature(export_model).parameters  # a pipeline folder's own option


def test_a_required_option_is_required_and_paths_may_be_any_path_like(tmp_path):
    from pathlib import PurePosixPath

    from export import export_model
    from runtime import PTDiTPipeline
    from runtime.cli.run import main as run

    missing = CliRunner().invoke(run, [str(tmp_path / "x.onnx"), "--random-text"])
    assert missing.exit_code == 2 and "Missing option '--out'" in missing.output
    with pytest.raises(InputError, match=r"^checkpoint .*nothing.pt does not exist$"):  # a PurePath is a path
        export_model(256, preset="tiny", checkpoint=PurePosixPath(tmp_path / "nothing.pt"), out_dir=tmp_path)
    with pytest.raises(InputError, match=r"^opset must be an integer in \[18, 23\], got 17 \(the exporter writes "
                                         r"these; LayerNormalization needs >= 17\)$"):
        export_model(256, preset="tiny", opset=17)
    assert list(tmp_path.iterdir()) == []
    positional = [p.name for p in inspect.signature(PTDiTPipeline.from_folder).parameters.values()
                  if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    assert positional == ["folder", "backend", "device", "verify", "runtime_cache_dir", "lean_runtime",
                          "weight_budget", "torch_precision", "cache"]  # cache added last: positional calls work
