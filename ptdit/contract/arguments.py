"""The Python face checks what it is given before any work, against the one declaration there is: the signature,
or a stage's declared options (ptdit.contract.options), which become keyword parameters of it.

    @checked(options=EXPORT_MODEL)
    def export_model(resolution: int | Sequence[int] = 1024, *, progress: Reporter | None = None, **options) -> ...

Every argument is held against its annotation as it is called: a wrong type is an InputError naming the parameter
(`prompt must be a string or a list of strings, got int 123`), before the body runs, so never a TypeError from
deep inside or a failure after some work. On a method, an object whose `closed` is true refuses every call.
The declared options' values are checked against their declarations (choices, ranges); other value checks stay
with the body.

The annotations understood: classes (int is not bool; a float may be any real number; a path is a str or an
os.PathLike; an ndarray anything numpy.asarray takes), None, unions, Sequence / list / tuple of them, Callable, Any,
and names imported only for type checking (matched by class name, so that the check imports nothing heavy). A
Literal is a choice, a value: left to the body.
"""

from __future__ import annotations

import builtins
import collections.abc
import functools
import inspect
import numbers
import os
import types
import typing
from pathlib import Path
from typing import Any, Callable, TypeVar

from .errors import InputError, option
from .options import Options

F = TypeVar("F", bound=Callable[..., Any])


class _UnresolvedType(type):
    def __getattr__(cls, name: str) -> Any:  # a dotted name of a module imported for type checkers: onnx_ir.Model
        if name.startswith("__"):
            raise AttributeError(name)
        return _unresolved(name)


class _Unresolved(metaclass=_UnresolvedType):
    """A name the annotations use that exists only for type checkers (an import under TYPE_CHECKING)."""


def _unresolved(name: str) -> type:
    return _UnresolvedType(name, (_Unresolved,), {})


def _namespace(function: Callable[..., Any]) -> dict[str, Any]:
    class Names(dict[str, Any]):
        def __missing__(self, name: str) -> Any:
            if hasattr(builtins, name):
                return getattr(builtins, name)
            return _unresolved(name)

    return Names(function.__globals__)


def _hints(function: Callable[..., Any], signature: inspect.Signature) -> dict[str, Any]:
    names = _namespace(function)
    hints = {}
    for name, parameter in signature.parameters.items():
        annotation = parameter.annotation
        if annotation is inspect.Parameter.empty or name == "self":
            continue
        hints[name] = eval(annotation, {}, names) if isinstance(annotation, str) else annotation  # noqa: S307
    return hints


def conforms(value: Any, hint: Any) -> bool:
    """`value` is of the annotation `hint`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if hint is None or hint is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, arg) for arg in args)
    if origin is typing.Literal:  # a choice is a value: the body checks it, in its own words
        return True
    if origin in (collections.abc.Callable,):
        return callable(value)
    if origin in (list, collections.abc.Sequence):
        return isinstance(value, (list, tuple)) and all(conforms(v, args[0] if args else Any) for v in value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(conforms(v, args[0]) for v in value)
        return len(value) == len(args) and all(conforms(v, a) for v, a in zip(value, args, strict=True))
    if origin is dict or origin is collections.abc.Mapping:
        return isinstance(value, collections.abc.Mapping)
    if not isinstance(hint, type):
        return True  # a form this checker does not know: left to the body
    if issubclass(hint, _Unresolved):
        return hint.__name__ in {cls.__name__ for cls in type(value).__mro__}
    if hint is bool:
        numpy_bool = type(value).__module__ == "numpy" and type(value).__name__ in ("bool_", "bool")
        return isinstance(value, bool) or numpy_bool
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if hint is Path or hint is os.PathLike:
        return isinstance(value, (str, os.PathLike))
    if hint.__name__ == "ndarray":  # array-like: what numpy.asarray takes (torch tensors, lists)
        return hasattr(value, "__array__") or hasattr(value, "__array_interface__") or isinstance(value, (list, tuple))
    return isinstance(value, hint)


def describe(hint: Any) -> str:
    """The annotation in words: "a string or a list of strings"."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is None or hint is type(None):
        return "None"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(describe(arg) for arg in args))
    if origin is collections.abc.Callable:
        return "a callable"
    if origin in (list, collections.abc.Sequence, tuple):
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return f"{len(args)} values ({', '.join(describe(a) for a in args)})"
        inner = describe(args[0]) if args else "values"
        return f"a list of {inner.removeprefix('a ').removeprefix('an ')}s"
    if origin is not None:
        return describe(origin)
    words = {bool: "True or False", int: "an integer", float: "a number", str: "a string", Path: "a path",
             os.PathLike: "a path"}
    if hint in words:
        return words[hint]
    name = getattr(hint, "__name__", str(hint))
    return "an array" if name == "ndarray" else f"a {name}"


def _shown(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def declared_signature(function: Callable[..., Any], options: Options) -> inspect.Signature:
    """`function`'s signature with the declared options as keyword parameters (before its own keyword ones, in
    place of its **options). A parameter of its own named as a declared option keeps its place and takes the
    declaration's annotation and default (`def export_model(resolution: Any = None, ...)`: the first argument)."""
    own = [p for p in inspect.signature(function).parameters.values() if p.kind is not p.VAR_KEYWORD]
    own = [p.replace(annotation=options[p.name].type, default=options[p.name].default) if p.name in options else p
           for p in own]
    leading = [p for p in own if p.kind is not p.KEYWORD_ONLY]
    declared = [inspect.Parameter(o.name, inspect.Parameter.KEYWORD_ONLY, default=o.default, annotation=o.type)
                for o in options.python() if o.name not in {p.name for p in own}]
    return inspect.signature(function).replace(
        parameters=[*leading, *declared, *(p for p in own if p.kind is p.KEYWORD_ONLY)])


def checked(function: F | None = None, *, options: Options | None = None) -> Any:
    """Check every argument of `function` against its annotation before it runs (and, on a method, that the
    object is not closed). With `options` (ptdit.contract.options), the function takes them through its **options:
    they become keyword parameters of its signature, and each value is checked against its declaration too; the
    function gets every declared option, the defaults filled in."""
    if function is None:
        return functools.partial(checked, options=options)
    hints: dict[str, Any] | None = None
    signature = declared_signature(function, options) if options is not None else inspect.signature(function)
    is_method = next(iter(signature.parameters), None) == "self"

    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> Any:
        nonlocal hints
        if is_method and args and getattr(args[0], "closed", False):
            raise InputError(f"this {type(args[0]).__name__} is closed: {function.__name__}() is refused after "
                             f"close(); make a new one")
        hints = hints if hints is not None else _hints(function, signature)
        bound = signature.bind(*args, **kwargs)  # an unknown keyword is a TypeError, as for any function
        for name, value in bound.arguments.items():
            hint = hints.get(name)
            if hint is not None and not conforms(value, hint):
                raise InputError(f"{option(name)} must be {describe(hint)}, got {_shown(value)}")
        if options is None:
            return function(*args, **kwargs)
        options.check(bound.arguments)
        bound.apply_defaults()
        return function(*bound.args, **bound.kwargs)

    if options is not None:
        call.__signature__ = signature  # type: ignore[attr-defined]
    return typing.cast(F, call)
