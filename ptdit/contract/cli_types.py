"""What every command shares on the command line (the one module of the contract that imports click): numbers
refused while the command line is read, before any work, when not finite or outside their range (exit 2, the
range named); --version; -q / -v and the Console that shows progress on stderr; the input artifact as the first
argument (its old --artifact spelling kept, with a deprecation note)."""

from __future__ import annotations

import contextlib
import functools
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import click

from .errors import InputError
from .numbers import Range
from .options import PATH_KINDS, Option, Options
from .progress import Advance
from .sizes import parse_size


class Number(click.ParamType):
    """An int or a finite float in `accepted` (ptdit.contract.numbers.Range)."""

    def __init__(self, accepted: Range) -> None:
        self.accepted = accepted
        self.name = "INTEGER" if accepted.integer else "FLOAT"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | float:
        try:
            number = int(value) if self.accepted.integer else float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not {self.accepted.describe()}", param, ctx)
        if not self.accepted.accepts(number):
            self.fail(f"{value!r} is not {self.accepted.describe()}", param, ctx)
        return number

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return f"{self.name} {self.accepted.interval().removeprefix('in ')}".strip()


class OneOf(click.Choice):
    """A choice among declared values of any type (ints: --res 1024), read by their text; the value is the declared
    one."""

    def __init__(self, choices: tuple[Any, ...]) -> None:
        self.values = {str(c): c for c in choices}
        super().__init__(list(self.values))

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        return self.values[super().convert(str(value), param, ctx)]


class Triple(click.ParamType):
    """Three integers T,H,W (e.g. 0,4,4)."""

    name = "T,H,W"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[int, int, int]:
        if isinstance(value, tuple):
            return value
        try:
            parts = tuple(int(v) for v in str(value).split(","))
        except ValueError:
            parts = ()
        if len(parts) != 3:
            self.fail(f"expected three integers T,H,W (e.g. 0,4,4), got {value!r}", param, ctx)
        return parts[0], parts[1], parts[2]


class SizeText(click.ParamType):
    """An image size WIDTHxHEIGHT (1280x720), or a set of sizes a stage names (1024:common), as text: the stage reads
    it against its resolution table."""

    name = "WxH"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value).strip()
        if not text.endswith(":common"):
            try:
                parse_size(text)
            except InputError:
                self.fail(f"expected WIDTHxHEIGHT in pixels (e.g. 1280x720) or CLASS:common (e.g. 1024:common), got "
                          f"{value!r}", param, ctx)
        return text


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


class ByteSize(click.ParamType):
    """A byte count: 2147483648, or with a binary unit: 512M, 2G."""

    name = "BYTES"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().upper().removesuffix("IB").removesuffix("B")
        unit = text[-1] if text and text[-1] in _UNITS else ""
        try:
            count = int(float(text[: len(text) - len(unit)]) * _UNITS[unit])
        except (ValueError, OverflowError):  # not a number, NaN, inf
            count = 0
        if count < 1:
            self.fail(f"{value!r} is not a positive byte count (e.g. 2147483648, 512M, 2G)", param, ctx)
        return count


def _click_type(declared: Option) -> Any:
    if declared.choices:
        return OneOf(declared.choices)
    if declared.kind in PATH_KINDS:
        return click.Path(dir_okay=declared.kind != "file", file_okay=declared.kind != "folder", path_type=Path)
    if declared.kind:
        return {"triple": Triple(), "bytes": ByteSize(), "size": SizeText()}[declared.kind]
    return Number(declared.accepted) if declared.accepted is not None else None


def click_option(declared: Option) -> Callable[[Any], Any]:
    """The click option of a declared option: its flag, type, default and help."""
    settings: dict[str, Any] = {"help": declared.help}
    if declared.type in (bool, "bool") and not declared.kind:
        if declared.default:  # --no-verify sets verify=False
            settings.update(is_flag=True, flag_value=False, default=True)
        else:
            settings.update(is_flag=True, default=False)
        return click.option(declared.cli_flag, declared.name, **settings)
    default = declared.default
    if declared.multiple:
        default = list(default) if isinstance(default, (list, tuple)) else ([] if default is None else [default])
    settings.update(type=_click_type(declared), multiple=declared.multiple, show_default=declared.show_default,
                    required=declared.required)
    if not declared.required:  # click takes an explicit default, even None, as the value a required option lacks
        settings["default"] = default
    if declared.metavar:
        settings["metavar"] = declared.metavar
    return click.option(declared.cli_flag, declared.name, **settings)


def declared_options(options: Options) -> Callable[[Any], Any]:
    """A command's click options, one for each option of `options` that the command has, in their order."""
    def decorate(command: Any) -> Any:
        for declared in reversed(list(options.command())):
            command = click_option(declared)(command)
        return command

    return decorate


def given(ctx: click.Context, names: list[str]) -> list[str]:
    """Of the parameters `names`, the flags of those given on the command line (not left at their default)."""
    return [param.opts[0] for param in ctx.command.params
            if param.name in names and ctx.get_parameter_source(param.name) != click.core.ParameterSource.DEFAULT]


# What --version reports besides ptdit-deploy: the packages the stages drive, by their import names.
DRIVEN = ("torch", "onnx", "onnxruntime", "tensorrt", "tensorrt_lean", "tensorrt_rtx", "polygraphy", "cuda")


def version_text() -> str:
    """ptdit-deploy's version, then each package it drives with the version installed (read from the
    installed packages' metadata: nothing is imported, so this is instant)."""
    from importlib import metadata

    def version(distribution: str) -> str:
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            return "not installed"

    found = metadata.packages_distributions()
    lines = [f"ptdit-deploy {version('ptdit-deploy')}"]
    for name in DRIVEN:
        distribution = found.get(name, [name])[0]
        shown = name if distribution == name else f"{name} ({distribution})"
        lines.append(f"  {shown}: {version(distribution)}")
    return "\n".join(lines)


def version_option(command: Any) -> Any:
    """--version on a command: what version_text() says, then exit 0."""
    def show(ctx: click.Context, param: click.Parameter, value: bool) -> None:
        if value and not ctx.resilient_parsing:
            click.echo(version_text())
            ctx.exit()

    return click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=show,
                        help="Show the versions of ptdit-deploy and of the packages it drives, then exit.")(command)


class Console:
    """What a command shows on stderr while it works: its progress lines (none with -q), the detail of every step
    (-v), and progress bars (tqdm) when stderr is a terminal and not -q."""

    def __init__(self, quiet: bool = False, verbose: bool = False, terminal: bool | None = None) -> None:
        self.quiet, self.verbose = quiet, verbose and not quiet
        self.bars = not quiet and (sys.stderr.isatty() if terminal is None else terminal)
        self._open: list[Any] = []  # the bars on screen: lines are written above them

    def line(self, text: str) -> None:
        if self.quiet:
            return
        if self._open:
            self._open[-1].write(text, file=sys.stderr)
        else:
            click.echo(text, err=True)

    def detail(self, text: str) -> None:
        if self.verbose:
            self.line(text)

    @contextlib.contextmanager
    def counter(self, label: str, total: int, unit: str) -> Iterator[Advance]:
        """A bar of `total` `unit`s (a Counter of ptdit.contract.progress); with -v each unit is also a line."""
        bar = None
        if self.bars:
            from tqdm import tqdm

            bar = tqdm(total=total, desc=label, unit=f" {unit}", file=sys.stderr, leave=False, dynamic_ncols=True)
            self._open.append(bar)
        done = 0

        def advance(note: str) -> None:
            nonlocal done
            done += 1
            if bar is not None:
                if note:
                    bar.set_postfix_str(note, refresh=False)
                bar.update()
            self.detail(f"  {label}: {unit} {done}/{total}{'  ' + note if note else ''}")

        try:
            yield advance
        finally:
            if bar is not None:
                self._open.remove(bar)
                bar.close()


def console_options(command: Any) -> Any:
    """-q / --quiet and -v / --verbose, the same on every command; the command gets `console` (a Console)."""
    @functools.wraps(command)
    def run(*args: Any, quiet: bool, verbose: bool, **kwargs: Any) -> Any:
        if quiet and verbose:
            raise click.UsageError("pass -q or -v, not both")
        return command(*args, console=Console(quiet, verbose), **kwargs)

    run = click.option("-v", "--verbose", is_flag=True, help="Also show every step, tile and stage as a line.")(run)
    return click.option("-q", "--quiet", is_flag=True,
                        help="Show no progress (lines or bars): only errors and the result.")(run)


def command_options(json_help: str = "Print a machine-readable summary on stdout.") -> Callable[[Any], Any]:
    """What every stage's command has: --json (the command gets `as_json`), --debug (tracebacks), -q / -v (the
    command gets `console`, console_options) and --version."""
    def decorate(command: Any) -> Any:
        command = console_options(version_option(command))
        command = click.option("--debug", is_flag=True, help="Show tracebacks.")(command)
        return click.option("--json", "as_json", is_flag=True, help=json_help)(command)

    return decorate


def artifact_argument(what: str, unless: str | None = None) -> Callable[[Any], Any]:
    """The input artifact as the first argument, ARTIFACT, as on every command; `--artifact PATH`, the spelling
    ptdit-run had, still works and says it is deprecated. The command gets `artifact` (a Path; None only when
    the option `unless` names is given instead)."""
    def decorate(command: Any) -> Any:
        @functools.wraps(command)
        def run(*args: Any, artifact: Path | None, artifact_option: Path | None, **kwargs: Any) -> Any:
            if unless is not None and kwargs.get(unless) is not None:
                if artifact is not None or artifact_option is not None:
                    raise click.UsageError(f"--{unless.replace('_', '-')} takes the place of ARTIFACT: pass one")
                return command(*args, artifact=None, **kwargs)
            if artifact is not None and artifact_option is not None:
                raise click.UsageError("the artifact is given twice: pass it as the argument only")
            if artifact_option is not None:
                click.echo("note: --artifact is deprecated; pass the artifact as the first argument "
                           f"({click.get_current_context().info_name} ARTIFACT ...)", err=True)
            chosen = artifact if artifact is not None else artifact_option
            if chosen is None:
                raise click.UsageError(f"missing ARTIFACT: {what}")
            return command(*args, artifact=chosen, **kwargs)

        run = click.option("--artifact", "artifact_option", type=click.Path(path_type=Path), default=None,
                           help="Deprecated spelling of the ARTIFACT argument.")(run)
        return click.argument("artifact", type=click.Path(path_type=Path), required=False)(run)

    return decorate


class JsonFlagCommand(click.Command):
    """A command whose `--json FILE` (written to a file, before --json meant the same on every command: the result
    on stdout) is pointed to `--results FILE`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        for flag, value in zip(args, args[1:]):
            if flag == "--json" and value.endswith(".json"):
                raise click.UsageError(f"--json takes no file any more: it prints the results as JSON on stdout; to "
                                       f"keep them, pass --results {value} (ptdit-bench) or redirect stdout", ctx)
        return super().parse_args(ctx, args)
