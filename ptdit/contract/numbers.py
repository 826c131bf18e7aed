"""The accepted range of a number a user gives (an option, an argument of the Python API): one definition per
number, used by the command line (ptdit.contract.cli_types.Number) and by the library alike. NaN and infinity are
never in a range."""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import SupportsFloat, SupportsIndex

from .errors import InputError


@dataclass(frozen=True)
class Range:
    low: float | None = None
    high: float | None = None
    integer: bool = False
    low_open: bool = False  # low itself is not accepted

    def accepts(self, value: object) -> bool:
        """An int (numpy's too) for an integer range, any real number otherwise; never NaN or infinity."""
        number: float
        if isinstance(value, bool):
            return False
        try:
            if self.integer and isinstance(value, SupportsIndex):
                number = operator.index(value)
            elif not self.integer and isinstance(value, SupportsFloat):
                number = float(value)
            else:
                return False
            if not math.isfinite(number):
                return False
        except OverflowError:  # an int too large for a float
            return False
        above_low = self.low is None or (number > self.low if self.low_open else number >= self.low)
        return above_low and (self.high is None or number <= self.high)

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a finite number"
        return f"{kind} {self.interval()}".strip()

    def interval(self) -> str:
        """[1, 1000], (0, 100], >= 0 ..."""
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{_shown(self.low)}, {_shown(self.high)}]"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {_shown(self.low)}"
        return f"<= {_shown(self.high)}" if self.high is not None else ''

    def check(self, what: str, value: float) -> float:
        """`value` if accepted, else an InputError naming `what` and the range."""
        if not self.accepts(value):
            raise InputError(f"{what} must be {self.describe()}, got {value!r}")
        return value


def _shown(bound: float) -> str:
    if float(bound).is_integer() and abs(bound) >= 2 ** 20 and math.log2(abs(bound) + 1).is_integer():
        return f"2^{int(math.log2(abs(bound) + 1))} - 1"
    return f"{bound:g}" if isinstance(bound, float) else str(bound)


SEED = Range(0, 2 ** 32 - 1, integer=True)  # every seed: of the weights, the noise, the inputs
STEPS = Range(1, 1000, integer=True)  # sampling steps: at most one per training timestep
GUIDANCE = Range(0, 100)  # the classifier-free guidance scale
DEFAULT_STEPS, DEFAULT_GUIDANCE = 30, 4.0  # the published sampling settings: every command's and API's default
SHIFT = Range(0, 100, low_open=True)  # the timestep shift
ROUNDS = Range(1, 10_000, integer=True)  # repetitions of a measurement
INSTANCES = Range(1, 64, integer=True)  # copies of a served model per device
CLIENTS = Range(1, 256, integer=True)  # concurrent clients of a load measurement
REQUESTS = Range(1, 100_000, integer=True)  # requests of a load measurement
