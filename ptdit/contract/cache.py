"""Training-free step caching: which denoising steps call the transformer, and what a skipped step uses instead.

    --cache every:2            compute every 2nd step, reuse the last computed prediction in between
    --cache calibrated:0.3     skip while the error the artifact's calibrated curve predicts stays under 0.3
    --cache every+taylor:3     ... and extrapolate the prediction to first order instead of reusing it
    --cache default            the documented default: calibrated, at the threshold the calibration chose

Both methods decide the whole schedule before the first step (`compute_plan`), so a device-resident step loop knows
what to launch in advance and no step waits on an indicator. `calibrated` is MagCache's rule on a curve of how much
the guided prediction changes per unit of timestep, calibrated once per artifact (ptdit-cache) and stored next to it
(`<artifact>.cache.json`, `cache.json` in a pipeline folder): each skipped step adds the change accumulated since
the last computed step to an error budget; a step is computed when the budget would exceed the threshold, or after
MAX_SKIPS skips in a row. The reuse rules, on the guided velocity v of computed steps a (last) and b (before it):
last: v_j = v_a; taylor: v_j = v_a + (v_a - v_b) (t_j - t_a) / (t_a - t_b) (the last rule until two are computed).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError, option

METHODS = ("every", "calibrated")
REUSE_RULES = ("last", "taylor")
DEFAULT = "default"
DEFAULT_METHOD = "calibrated"
DEFAULT_TARGET_PSNR = 30.0  # dB against the uncached run: what ptdit-cache calibrates the default threshold for
MAX_SKIPS = 3
SCHEMA = "ptdit-cache/1"
SYNTAX = "METHOD[+taylor][:VALUE] (every:N, calibrated:THRESHOLD, default or off)"


@dataclass(frozen=True)
class CacheSpec:
    method: str  # every | calibrated
    value: float | None  # N of every; the threshold of calibrated (None: the calibrated one)
    reuse: str = "last"
    given: str = field(default="", compare=False)  # as the user wrote it ("default"), for messages and summaries

    def __str__(self) -> str:
        if self.given:
            return self.given
        reuse = "" if self.reuse == "last" else f"+{self.reuse}"
        value = "" if self.value is None else f":{self.value:g}"
        return f"{self.method}{reuse}{value}"


def parse_cache(text: str | None, name: str = "cache") -> CacheSpec | None:
    """`--cache` as given; None (or "off") for no caching. Refuses anything else it cannot read, naming `name`."""
    if text is None or text.strip().lower() in ("", "off", "none"):
        return None
    raw = text.strip().lower()
    if raw == DEFAULT:
        return CacheSpec(DEFAULT_METHOD, None, given=raw)
    head, _, value_text = raw.partition(":")
    method, _, reuse = head.partition("+")
    reuse = reuse or "last"
    if method not in METHODS or reuse not in REUSE_RULES:
        raise InputError(f"{option(name, text)} is not a cache method: use {SYNTAX}; methods: {', '.join(METHODS)}; "
                         f"reuse rules: {', '.join(REUSE_RULES)}")
    if not value_text:
        if method == "every":
            raise InputError(f"{option(name, text)} needs N: every:N computes every N-th step (every:2 halves the "
                             f"transformer calls)")
        return CacheSpec(method, None, reuse, raw)
    try:
        value = float(value_text)
    except ValueError:
        value = math.nan
    if method == "every" and not (value.is_integer() and value >= 1):
        raise InputError(f"{option(name, text)}: N of every:N is a whole number of steps, 1 or more")
    if not math.isfinite(value) or value < 0:
        raise InputError(f"{option(name, text)}: the threshold is a finite number >= 0 (0 skips nothing)")
    return CacheSpec(method, value, reuse, raw)


@dataclass(frozen=True)
class ChangeCurve:
    """How much the guided prediction changes per 1000 units of timestep, at the midpoints of the calibration
    run's steps (timesteps decreasing): relative L2 change between steps = rate x (t_prev - t) / 1000."""

    timesteps: tuple[float, ...]
    rates: tuple[float, ...]

    def rate_at(self, t: float) -> float:
        ts = self.timesteps[::-1]  # increasing, for bisect
        rates = self.rates[::-1]
        k = bisect.bisect_left(ts, t)
        if k == 0:
            return rates[0]
        if k == len(ts):
            return rates[-1]
        w = (t - ts[k - 1]) / (ts[k] - ts[k - 1])
        return rates[k - 1] + w * (rates[k] - rates[k - 1])

    def changes(self, timesteps: list[float]) -> list[float]:
        """The predicted relative change of the prediction at each step from the one before (0 at the first)."""
        out = [0.0]
        for prev, t in zip(timesteps, timesteps[1:]):
            out.append(self.rate_at((prev + t) / 2) * (prev - t) / 1000.0)
        return out


def check_steps(spec: CacheSpec | None, steps: int) -> None:
    if spec is not None and steps < 2:
        raise InputError(f"{option('cache', str(spec))} with {option('steps', steps)}: caching skips steps between "
                         f"computed ones, so it needs 2 steps or more; pass {option('cache', 'off')}")


def compute_plan(spec: CacheSpec | None, timesteps: list[float], curve: ChangeCurve | None = None,
                 threshold: float | None = None) -> tuple[bool, ...]:
    """True for each step that calls the transformer. No cache, every:1 and threshold 0 compute every step."""
    steps = len(timesteps)
    check_steps(spec, steps)
    if spec is None:
        return (True,) * steps
    if spec.method == "every":
        n = int(spec.value or 1)
        return tuple(i % n == 0 for i in range(steps))
    limit = spec.value if spec.value is not None else threshold
    if curve is None or limit is None:
        raise InputError(f"{option('cache', str(spec))} needs this artifact's change curve: run ptdit-cache "
                         f"calibrate ARTIFACT once (it writes the calibration next to the artifact), or use every:N")
    changes = curve.changes(timesteps)
    plan, drift, budget, skipped = [True], 0.0, 0.0, 0
    for i in range(1, steps):
        drift += changes[i]  # how far step i's prediction is from the last computed one
        if limit > 0 and skipped < MAX_SKIPS and budget + drift <= limit:
            budget += drift
            skipped += 1
            plan.append(False)
        else:
            drift, budget, skipped = 0.0, 0.0, 0
            plan.append(True)
    return tuple(plan)


@dataclass(frozen=True)
class Calibration:
    """What ptdit-cache measured for one transformer (one size): its change curve, and the threshold of
    calibrated that met the target against the uncached run on the calibration prompts."""

    size: str  # WxH of the images
    curve: ChangeCurve
    threshold: float
    target_psnr: float
    measured_psnr: float | None  # at the threshold (None: no threshold met the target, and it is 0)
    steps: int
    guidance: float
    prompts: int
    seeds: int

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "timesteps": list(self.curve.timesteps), "rates": list(self.curve.rates),
                "threshold": self.threshold, "target_psnr": self.target_psnr, "measured_psnr": self.measured_psnr,
                "steps": self.steps, "guidance": self.guidance, "prompts": self.prompts, "seeds": self.seeds}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        curve = ChangeCurve(tuple(float(t) for t in d["timesteps"]), tuple(float(r) for r in d["rates"]))
        if len(curve.timesteps) != len(curve.rates) or not curve.rates:
            raise ValueError("timesteps and rates differ in length")
        measured = None if d["measured_psnr"] is None else float(d["measured_psnr"])
        return cls(str(d["size"]), curve, float(d["threshold"]), float(d["target_psnr"]), measured, int(d["steps"]),
                   float(d["guidance"]), int(d["prompts"]), int(d["seeds"]))


def calibration_file(artifact: Path) -> Path:
    """Where an artifact's calibration lives: beside a file, inside a pipeline folder."""
    return artifact / "cache.json" if artifact.is_dir() else artifact.with_name(artifact.stem + ".cache.json")


def read_calibrations(artifact: Path, weights: dict[str, Any]) -> dict[str, Calibration]:
    """The artifact's calibrations by size ({} when it has none). A file written for other weights is refused."""
    from .files import read_json

    path = calibration_file(artifact)
    if not path.exists():
        return {}
    data = read_json(path, f"{path} is missing")
    fix = f"run ptdit-cache calibrate {artifact} again (or delete {path.name})"
    if data.get("schema") != SCHEMA:
        raise InputError(f"{path} is not a cache calibration ({SCHEMA}); {fix}")
    if data.get("weights") != weights:
        raise InputError(f"{path} was calibrated for other weights than {artifact.name} holds; {fix}")
    try:
        return {c["size"]: Calibration.from_dict(c) for c in data["calibrations"]}
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{path} is not a readable calibration ({e}); {fix}") from None
