"""Frozen dataclasses to and from JSON, for the manifests: a manifest's fields are declared once (its dataclass),
and a file that lacks one, or holds a value of the wrong kind, is refused in one line that names the field.

Supported field types: str, int, float, bool, Any, pathlib.Path (a string in JSON), nested dataclasses,
`X | None`, list[X], tuple[X, ...] and dict[str, X]. A field declared with `optional()` may be absent from the
file (it takes its default) and is left out of the JSON while it holds that default, so that the files stay
as the earlier writers wrote them.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar, Union

from .errors import InputError

T = TypeVar("T")
_OMIT = "omit_default"


def optional(default: Any = None) -> Any:
    """A field the file may lack, written only when it differs from `default`."""
    return dataclasses.field(default=default, metadata={_OMIT: True})


class RecordError(InputError):
    """A field of a JSON record is missing or of the wrong kind; `field` is its dotted path."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"'{field}' {problem}")
        self.field = field


class Record:
    """A frozen dataclass that is also a JSON record: Cls.from_dict(data) and record.to_dict()."""

    @classmethod
    def from_dict(cls: type[R], data: Any, where: str = "") -> R:
        return from_json(cls, data, where)

    def to_dict(self) -> Any:
        return to_json(self)


R = TypeVar("R", bound=Record)


def from_json(cls: type[T], data: Any, where: str = "") -> T:
    """`data` (parsed JSON) as an instance of the dataclass `cls`; RecordError names the first bad field."""
    return typing.cast(T, _convert(cls, data, where))


def to_json(record: Any) -> Any:
    """The JSON form of a record (dataclasses, lists, tuples, dicts, paths), fields at their default omitted
    where declared with optional()."""
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        out = {}
        for f in dataclasses.fields(record):
            value = getattr(record, f.name)
            if f.metadata.get(_OMIT) and value == f.default:
                continue
            out[f.name] = to_json(value)
        return out
    if isinstance(record, (list, tuple)):
        return [to_json(v) for v in record]
    if isinstance(record, dict):
        return {str(k): to_json(v) for k, v in record.items()}
    if isinstance(record, Path):
        return str(record)
    return record


@lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _kind(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value, where)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise RecordError(where or tp.__name__, f"is {type(value).__name__}, expected an object")
        hints, kwargs = _hints(tp), {}
        for f in dataclasses.fields(tp):
            path = f"{where}.{f.name}" if where else f.name
            if f.name in value:
                kwargs[f.name] = _convert(hints[f.name], value[f.name], path)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise RecordError(path, "is missing")
        return tp(**kwargs)
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise RecordError(where, f"is {type(value).__name__}, expected a list")
        items = [_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise RecordError(where, f"is {type(value).__name__}, expected an object")
        return {k: _convert(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is Path:
        return Path(_convert(str, value, where))
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise RecordError(where, f"is {type(value).__name__} {repr(value)[:40]}, expected {_kind(tp)}")
    return value
