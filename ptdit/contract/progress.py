"""How long work tells its caller how far it is: lines (what is being done) and counters (steps, tiles, stages),
both optional. The commands show counters as progress bars on a terminal (ptdit.contract.cli_types.Console); a
Python caller passes its own callables, or gets the `logging` module's lines."""

from __future__ import annotations

import contextlib
from typing import Callable, ContextManager, Iterator

Reporter = Callable[[str], None]  # one line of what is being done
Advance = Callable[[str], None]  # one unit of a counted task done, with a note ("t=600.0"; "" for none)
Counter = Callable[[str, int, str], ContextManager[Advance]]  # (what is counted, how many, unit) -> advance


@contextlib.contextmanager
def no_counter(label: str, total: int, unit: str) -> Iterator[Advance]:
    """A counter that shows nothing."""
    yield lambda note: None
