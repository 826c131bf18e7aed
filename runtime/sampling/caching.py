"""Step caching as a run asks for it: `--cache` read, and the artifact's calibration (ptdit.contract.cache) found for
the size a sampler draws. The calibration sits beside the artifact (a pipeline folder: inside it) and is tied to the
transformer's weights, so one calibrated on other weights is refused rather than used. It is read once per artifact
(a pipeline or a server reads it when it first needs it: a calibration written later is seen by the next one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ptdit.contract.cache import CacheSpec, Calibration, check_steps, parse_cache, read_calibrations
from ptdit.contract.errors import InputError, option

from ..artifact import Artifact


def weights_identity(artifact: Artifact) -> dict[str, Any]:
    """What ties a calibration to the weights: the preset and the weights' source and hashes (not their path)."""
    model = artifact.model
    weights = {k: v for k, v in model.weights.to_dict().items() if k != "path"}
    return {"preset": model.preset or model.config.get("name"), **weights}


class CacheSettings:
    """One artifact's (or pipeline folder's) calibrations, read on first use; `sampler_args` gives a sampler its
    cache and calibration for a transformer artifact."""

    def __init__(self, location: Path):
        self.location = location
        self._read: dict[str, Calibration] | None = None

    def use(self, calibration: Calibration) -> None:
        """Sample with `calibration` for its size, not what the file holds (ptdit-cache calibrate, while it runs)."""
        self._read = {**(self._read or {}), calibration.size: calibration}

    def calibrations(self, artifact: Artifact) -> dict[str, Calibration]:
        if self._read is None:
            self._read = read_calibrations(self.location, weights_identity(artifact))
        return self._read

    def sampler_args(self, cache: str | CacheSpec | None, artifact: Artifact) -> dict[str, Any]:
        """make_sampler's `cache` and `calibration`; a calibrated cache the artifact has no calibration for, at its
        size, is refused here."""
        spec = cache if isinstance(cache, CacheSpec) or cache is None else parse_cache(cache)
        if spec is None or spec.method != "calibrated":
            return {"cache": spec, "calibration": None}
        size = str(artifact.export.image_size)
        found = self.calibrations(artifact)
        if size not in found:
            sizes = f"is calibrated for {', '.join(sorted(found))}, not {size}" if found else "has no calibration"
            raise InputError(f"{option('cache', str(spec))} needs this artifact's change curve, and "
                             f"{self.location.name} {sizes}: run ptdit-cache calibrate {self.location.name}"
                             f"{'' if not found else ' --height H --width W'} once, or use every:N")
        return {"cache": spec, "calibration": found[size]}

    def check(self, cache: str | CacheSpec | None, artifact: Artifact, steps: int) -> None:
        """What a run with `cache` at `steps` would refuse, refused now (before any work)."""
        spec = cache if isinstance(cache, CacheSpec) or cache is None else parse_cache(cache)
        check_steps(spec, steps)
        self.sampler_args(spec, artifact)
