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
