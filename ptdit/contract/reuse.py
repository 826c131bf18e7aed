"""One rule for every output a run may find already there (docs/ARCHITECTURE.md, "Re-runs"): it is absent (made),
current (reused, with what was read of it), or stale (refused, saying why, unless --force). The export, the
pipeline folder, the build and the diff report each decide which, and all answer with this type."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from .errors import InputError, option

T = TypeVar("T")
State = Literal["absent", "current", "stale"]


@dataclass(frozen=True)
class Existing(Generic[T]):
    state: State
    why: str = ""  # stale: what is wrong with it, in a sentence that names it
    found: T | None = None  # current: what was read of it (a manifest, a report)

    @classmethod
    def absent(cls) -> Existing[T]:
        return cls("absent")

    @classmethod
    def current(cls, found: T | None = None) -> Existing[T]:
        return cls("current", found=found)

    @classmethod
    def stale(cls, why: str) -> Existing[T]:
        return cls("stale", why=why)

    def refuse_if_stale(self, redo: str) -> None:
        """A stale output is never reused nor silently replaced: `redo` is what force=True (--force) does to it."""
        if self.state == "stale":
            raise InputError(f"{self.why}: it is stale and is not reused; pass {option('force', True)} to {redo}")
