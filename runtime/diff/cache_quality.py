"""Step caching measured, not assumed: cached runs against the uncached run of the same prompts and seeds, and the
calibration that writes an artifact's change curve and the threshold that meets a quality target (ptdit-cache).

Quality is judged as the caching papers judge it, against the uncached output: the final latent's relative L2, and
on a pipeline folder the image's PSNR and SSIM (a video: per frame, averaged). A transformer artifact alone has no
decoder; its PSNR is the latent's, with the uncached latent's range as the peak. Speed is the transformer calls
made and the wall time per image, both also as a ratio to the uncached run measured in the same process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ptdit.contract.cache import (
    DEFAULT_TARGET_PSNR,
    SCHEMA,
    Calibration,
    ChangeCurve,
    calibration_file,
    compute_plan,
    parse_cache,
)
from ptdit.contract.errors import InputError
from ptdit.contract.files import json_text
from ptdit.contract.outputs import Outputs
from ptdit.contract.sizes import Size

from ..pipeline.ptdit_pipeline import PTDiTPipeline
from ..sampling.caching import weights_identity
from ..sampling.schedule import schedule, timestep_shift
from .metrics import psnr

CANDIDATE_THRESHOLDS = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 0.8, 1.0, 1.5, 2.0, 3.0)
Progress = Callable[[str], None]


@dataclass
class Draw:
    latent: np.ndarray
    pixels: np.ndarray | None  # float [n, H, W, 3] in [0, 1] (a video: its frames), None without a decoder
    calls: int
    seconds: float  # the sampling stage (the transformer's loop)
    total_seconds: float  # the whole call: text encoder, sampling, decoder


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM (Wang et al. 2004: 11 x 11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03) of two images in [0, 1],
    [H, W, 3], per channel then averaged."""
    k = np.exp(-0.5 * ((np.arange(11) - 5) / 1.5) ** 2)
    k /= k.sum()

    def blur(x: np.ndarray) -> np.ndarray:
        n = len(k)
        x = sum(k[i] * x[i:x.shape[0] - n + 1 + i] for i in range(n))
        return sum(k[i] * x[:, i:x.shape[1] - n + 1 + i] for i in range(n))

    c1, c2 = 0.01**2, 0.03**2
    values = []
    for c in range(a.shape[-1]):
        x, y = a[..., c].astype(np.float64), b[..., c].astype(np.float64)
        mx, my = blur(x), blur(y)
        vx, vy, cov = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
        values.append(np.mean((2 * mx * my + c1) * (2 * cov + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))))
    return float(np.mean(values))


def compare(got: Draw, base: Draw) -> dict[str, float | None]:
    """The papers' figures of one cached draw against its uncached draw."""
    rel = float(np.linalg.norm(got.latent - base.latent)) / max(float(np.linalg.norm(base.latent)), 1e-30)
    if base.pixels is None or got.pixels is None:
        peak = float(base.latent.max() - base.latent.min()) or 1.0
        return {"latent_rel_l2": rel, "psnr": psnr(got.latent, base.latent, peak), "ssim": None}
    frames = list(zip(got.pixels.reshape(-1, *got.pixels.shape[-3:]), base.pixels.reshape(-1, *base.pixels.shape[-3:])))
    return {"latent_rel_l2": rel, "psnr": float(np.mean([psnr(g, b, peak=1.0) for g, b in frames])),
            "ssim": float(np.mean([ssim(g, b) for g, b in frames]))}


class QualityRun:
    """One opened pipeline (or transformer artifact) and the prompts x seeds every method is measured on."""

    def __init__(self, pipe: PTDiTPipeline, prompts: list[str], seeds: int, steps: int, guidance: float,
                 size: Size | None = None):
        self.pipe, self.prompts, self.seeds, self.steps, self.guidance = pipe, prompts, seeds, steps, guidance
        self.decoded = pipe.components is not None
        self.size = size or pipe.sizes[0]  # a folder's size drawn (default: its first)
        self.session = pipe.components.transformer(self.size) if pipe.components else pipe.transformer
        self.baseline: list[Draw] = []

    def cases(self) -> list[tuple[int, int]]:
        return [(p, s) for p in range(len(self.prompts)) for s in range(self.seeds)]

    def draw(self, prompt: int, seed: int, cache: str | None,
             on_latent: Callable[[int, float, np.ndarray], None] | None = None) -> Draw:
        kwargs: dict[str, Any] = {"num_inference_steps": self.steps, "guidance_scale": self.guidance, "seed": seed,
                                  "cache": cache, "callback_on_step_end": on_latent}
        if self.decoded:
            kwargs.update(prompt=self.prompts[prompt], output_type="np", height=self.size.height,
                          width=self.size.width)
        else:  # seeded Gaussian features stand for prompt k
            rng = np.random.default_rng(1000 + prompt)
            kwargs["prompt_embeds"] = rng.standard_normal((self.pipe.text_len, self.pipe.text_dim), dtype=np.float32)
        start = time.perf_counter()
        out = self.pipe(**kwargs)
        total = time.perf_counter() - start
        pixels = None
        if self.decoded:
            pixels = np.asarray(out.frames if out.frames is not None else out.images, dtype=np.float32)
        return Draw(out.latents, pixels, out.transformer_calls, out.timings["sample"], total)

    def uncached(self, on_latent: Callable[[int, int], Callable[[int, float, np.ndarray], None]] | None = None,
                 progress: Progress = lambda line: None) -> None:
        for warm_up in (None, "every:2"):  # the first call of a session pays for its start, the first cached one
            self.draw(0, 0, warm_up)      # for the reuse graphs of a step loop
        self.baseline = []
        for p, s in self.cases():
            self.baseline.append(self.draw(p, s, None, on_latent(p, s) if on_latent else None))
            progress(f"uncached: prompt {p + 1}, seed {s}")

    def row(self, cache: str | None, progress: Progress = lambda line: None) -> dict[str, Any]:
        """One method's figures over every case, against the uncached run (uncached() first)."""
        draws = []
        for (p, s), base in zip(self.cases(), self.baseline):
            draws.append((self.draw(p, s, cache), base))
        progress(f"{cache or 'off'}: {len(draws)} draws")
        figures = [compare(got, base) for got, base in draws]
        calls, seconds = sum(g.calls for g, _ in draws), sum(g.seconds for g, _ in draws)
        base_calls, base_seconds = sum(b.calls for _, b in draws), sum(b.seconds for _, b in draws)
        total, base_total = sum(g.total_seconds for g, _ in draws), sum(b.total_seconds for _, b in draws)

        def mean(key: str) -> float | None:
            values = [v for f in figures if (v := f[key]) is not None]
            return float(np.mean(values)) if values else None

        return {"cache": cache or "off", "transformer_calls": calls / len(draws), "calls_ratio": calls / base_calls,
                "sample_seconds_per_image": seconds / len(draws), "sample_time_ratio": seconds / base_seconds,
                "seconds_per_image": total / len(draws), "time_ratio": total / base_total,
                "latent_rel_l2": mean("latent_rel_l2"), "psnr_db": mean("psnr"),
                "psnr_min_db": min(float(f["psnr"] or 0.0) for f in figures), "ssim": mean("ssim")}


def change_curve(run: QualityRun, progress: Progress = lambda line: None) -> ChangeCurve:
    """The guided prediction's relative change per 1000 units of timestep along uncached trajectories (each step's
    velocity recovered from the latent it moved), averaged over the run's cases; runs the uncached draws too."""
    latents: dict[tuple[int, int], list[np.ndarray]] = {}

    def keeper(p: int, s: int) -> Callable[[int, float, np.ndarray], None]:
        latents[(p, s)] = [noise_of(run, s)]
        return lambda i, t, latent: latents[(p, s)].append(latent.astype(np.float64))

    run.uncached(keeper, progress)
    export = run.session.artifact.export
    size = export.image_size
    assert size is not None  # a transformer's
    ts = [float(t) for t in schedule(run.steps, timestep_shift(size.height, size.width, export.frames))] + [0.0]
    rates = np.zeros(run.steps - 1)
    for path in latents.values():
        v = [(path[i + 1] - path[i]) / ((ts[i] - ts[i + 1]) / 1000.0) for i in range(run.steps)]
        for i in range(1, run.steps):
            change = np.linalg.norm(v[i] - v[i - 1]) / max(float(np.linalg.norm(v[i - 1])), 1e-30)
            rates[i - 1] += change / ((ts[i - 1] - ts[i]) / 1000.0) / len(latents)
    midpoints = tuple((ts[i - 1] + ts[i]) / 2 for i in range(1, run.steps))
    return ChangeCurve(midpoints, tuple(float(r) for r in rates))


def noise_of(run: QualityRun, seed: int) -> np.ndarray:
    from ..sampling.schedule import initial_noise

    shape = run.session.artifact.spec("latent").shape
    return initial_noise((1, *shape[1:]), seed).astype(np.float64)


def calibrate(run: QualityRun, target_psnr: float = DEFAULT_TARGET_PSNR,
              progress: Progress = lambda line: None) -> tuple[Calibration, list[dict[str, Any]]]:
    """The change curve, then the largest candidate threshold of calibrated whose mean PSNR against the uncached run
    meets `target_psnr` (0 when none does: calibrated then skips nothing); and the rows measured on the way."""
    curve = change_curve(run, progress)
    export = run.session.artifact.export
    size = export.image_size
    assert size is not None
    ts = [float(t) for t in schedule(run.steps, timestep_shift(size.height, size.width, export.frames))]
    chosen, rows, seen = 0.0, [], set()
    measured: float | None = None
    run.pipe.caching.use(Calibration(str(size), curve, 0.0, target_psnr, None, run.steps, run.guidance,
                                     len(run.prompts), run.seeds))
    for threshold in CANDIDATE_THRESHOLDS:
        plan = compute_plan(parse_cache(f"calibrated:{threshold}"), ts, curve)
        if all(plan) or plan in seen:
            continue
        seen.add(plan)
        row = run.row(f"calibrated:{threshold}", progress)
        rows.append(row)
        if row["psnr_db"] < target_psnr:
            break
        chosen, measured = threshold, row["psnr_db"]
    calibration = Calibration(str(size), curve, chosen, target_psnr, measured, run.steps, run.guidance,
                              len(run.prompts), run.seeds)
    return calibration, rows


def write_calibration(artifact: Path, run: QualityRun, calibration: Calibration) -> Path:
    """Into the artifact's calibration file, beside the calibrations of its other sizes (a file of other weights, or
    one that is not readable, is replaced); written whole or not at all."""
    from ptdit.contract.cache import read_calibrations

    identity = weights_identity(run.session.artifact)
    try:
        kept = read_calibrations(artifact, identity)
    except InputError:
        kept = {}
    kept[calibration.size] = calibration
    path = calibration_file(artifact)
    data = {"schema": SCHEMA, "weights": identity,
            "calibrations": [c.to_dict() for _, c in sorted(kept.items())]}
    with Outputs(force=True) as outputs:
        outputs.claim(path).write_text(json_text(data))
        outputs.commit()
    return path
