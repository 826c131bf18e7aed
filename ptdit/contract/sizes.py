"""An image size, as every stage names it: WIDTHxHEIGHT in text (--size 1280x720, a file name, pipeline.json), height
and width as numbers. The resolution table (ptdit.resolution) says which sizes a model takes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .errors import InputError, option

_TEXT = re.compile(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*")


@dataclass(frozen=True)
class Size:
    """An image size in pixels; written WIDTHxHEIGHT, as --size takes it."""

    height: int
    width: int

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"

    @property
    def ratio(self) -> float:
        """height / width, as PixArt's bins are keyed."""
        return self.height / self.width

    @property
    def square(self) -> bool:
        return self.height == self.width

    @property
    def name(self) -> str:
        """How file names say it: 1024 for a square, 1280x720 otherwise (square names are those of before sizes)."""
        return str(self.height) if self.square else str(self)


def parse_size(value: Any, name: str = "size") -> Size:
    """A Size from "WIDTHxHEIGHT" text or a Size; anything else is an InputError naming the option `name`."""
    if isinstance(value, Size):
        return value
    match = _TEXT.fullmatch(value) if isinstance(value, str) else None
    if match is None or int(match[1]) < 1 or int(match[2]) < 1:
        raise InputError(f"{option(name)} takes WIDTHxHEIGHT in pixels (e.g. 1280x720), got {value!r}")
    return Size(height=int(match[2]), width=int(match[1]))
