"""Command-line types every stage's options use (the one module of the contract that imports click): a number is
refused while the command line is read, before any work, when it is not finite or outside its range (exit 2, the
range named)."""

from __future__ import annotations

from typing import Any

import click

from .numbers import Range


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
