"""What an export shows while it works: each stage on stderr with its duration, the durations kept."""

from __future__ import annotations

import contextlib
import time
from typing import Iterator

from ptdit.contract.progress import Reporter


class Stages:
    """Reports each stage with its duration and keeps the timings."""

    def __init__(self, report: Reporter):
        self.report = report
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def run(self, name: str, label: str) -> Iterator[None]:
        self.report(f"  {label} ...")
        start = time.perf_counter()
        yield
        elapsed = time.perf_counter() - start
        self.seconds[name] = round(elapsed, 2)
        self.report(f"  {label}: done in {elapsed:.1f} s")
