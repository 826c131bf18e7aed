"""Each stage's options, declared once (in the spirit of Polygraphy's argument groups): an option's Python name, its
type, default, help text, command-line flag and accepted values live in one `Option`, and an `Options` set of them
gives the stage everything else:

- the command's click options (ptdit.contract.cli_types.declared_options), with the same help and the same checks
  while the command line is read;
- the Python face's keyword parameters, annotations and defaults (ptdit.contract.arguments.checked(options=...)),
  which `help()` and `inspect.signature` show;
- the up-front checks of each value (choices, ranges) for both, before any work, in one wording.

Rules between options (fp8's calibration needs --precision fp8, ...) stay with each stage's options module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

from .errors import InputError, flag_of, option
from .numbers import Range

# How a command reads a value (a bool without a kind is a flag; choices and ranges are read as such).
PATH_KINDS = ("file", "folder", "path")  # a path to a file, to a folder, or to either
KINDS = (*PATH_KINDS, "triple", "bytes", "size", "")  # triple: "T,H,W"; bytes: 2147483648, 512M, 2G; size: WxH


@dataclass(frozen=True)
class Option:
    name: str  # the Python keyword parameter; the command's flag is --name-with-dashes unless `flag` says otherwise
    type: Any  # the Python parameter's annotation: a type (a string is read in the module of the function taking it)
    default: Any
    help: str
    flag: str = ""
    choices: tuple[Any, ...] = ()
    accepted: Range | None = None
    kind: str = ""  # KINDS: how a command reads it
    multiple: bool = False  # the flag is repeated for several values (the Python parameter takes one or a list)
    metavar: str = ""
    show_default: bool = False  # the command's help shows the default (else the help text says it, if it matters)
    required: bool = False  # the command needs it
    note: str = ""  # why the accepted values are what they are, added to the refusal of another
    command: bool = True  # an option of the command
    python: bool = True  # a keyword of the Python face

    def __post_init__(self) -> None:
        assert self.kind in KINDS, self.kind

    @property
    def cli_flag(self) -> str:
        return self.flag or flag_of(self.name)

    def check(self, value: Any) -> None:
        """`value` is one of the choices and in the accepted range (None passes where it is the default)."""
        if value is None and self.default is None:
            return
        values = list(value) if self.multiple and isinstance(value, (list, tuple)) else [value]
        why = f" ({self.note})" if self.note else ""
        for one in values:
            if self.accepted is not None and not self.accepted.accepts(one):
                raise InputError(f"{option(self.name)} must be {self.accepted.describe()}, got {one!r}{why}")
            if self.choices and not any(one == c and type(one) is type(c) for c in self.choices):
                raise InputError(f"{option(self.name)} must be one of {', '.join(map(str, self.choices))}, got "
                                 f"{one!r}{why}")


class Options:
    """An ordered set of options: a stage's, or a part of it (`only`, `without`, `+`)."""

    def __init__(self, *options: Option) -> None:
        self._options = {o.name: o for o in options}
        assert len(self._options) == len(options), "an option is declared twice"

    def __iter__(self) -> Iterator[Option]:
        return iter(self._options.values())

    def __getitem__(self, name: str) -> Option:
        return self._options[name]

    def __contains__(self, name: object) -> bool:
        return name in self._options

    def __add__(self, other: Options) -> Options:
        return Options(*self, *other)

    def names(self) -> list[str]:
        return list(self._options)

    def only(self, *names: str) -> Options:
        return Options(*(self[n] for n in names))

    def without(self, *names: str) -> Options:
        missing = set(names) - set(self._options)
        assert not missing, missing
        return Options(*(o for o in self if o.name not in names))

    def python(self) -> Options:
        return Options(*(o for o in self if o.python))

    def command(self) -> Options:
        return Options(*(o for o in self if o.command))

    def defaults(self) -> dict[str, Any]:
        return {o.name: o.default for o in self}

    def flags(self) -> dict[str, str]:
        """Parameter name -> flag, where the flag is not --name-with-dashes (for InputError.render)."""
        return {o.name: o.flag for o in self if o.flag}

    def check(self, values: Mapping[str, Any]) -> None:
        for name, value in values.items():
            if name in self._options:
                self._options[name].check(value)


def as_list(value: Any | Sequence[Any]) -> list[Any]:
    """An option that takes one value or several (multiple=True), as a list."""
    return list(value) if isinstance(value, (list, tuple)) else [value]
