"""Step caching as a run asks for it: `--cache` read, and the artifact's calibration (ptdit.contract.cache) found for
the size a sampler draws. The calibration sits beside the artifact (a pipeline folder: inside it) and is tied to the
transformer's weights, so one calibrated on other weights is refused rather than used."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ptdit.contract.cache import CacheSpec, Calibration, parse_cache, read_calibrations

from ..backends.interface import Session


def weights_identity(session: Session) -> dict[str, Any]:
    """What ties a calibration to the weights: the preset and the weights' source and hashes (not their path)."""
    model = session.artifact.model
    weights = {k: v for k, v in model.weights.to_dict().items() if k != "path"}
    return {"preset": model.preset or model.config.get("name"), **weights}


class CacheSettings:
    """One artifact's (or pipeline folder's) calibrations, read on first use; `sampler_args` gives a sampler its
    cache and calibration for a session."""

    def __init__(self, location: Path):
        self.location = location
        self._read: dict[str, Calibration] | None = None

    def use(self, calibration: Calibration) -> None:
        """Sample with `calibration` for its size, not what the file holds (ptdit-cache calibrate, while it runs)."""
        self._read = {**(self._read or {}), calibration.size: calibration}

    def calibrations(self, session: Session) -> dict[str, Calibration]:
        if self._read is None:
            self._read = read_calibrations(self.location, weights_identity(session))
        return self._read

    def sampler_args(self, cache: str | CacheSpec | None, session: Session) -> dict[str, Any]:
        spec = cache if isinstance(cache, CacheSpec) or cache is None else parse_cache(cache)
        if spec is None or spec.method != "calibrated":
            return {"cache": spec, "calibration": None}
        size = session.artifact.export.image_size
        return {"cache": spec, "calibration": self.calibrations(session).get(str(size))}
