"""One VAE decoder call of a pipeline folder (a chunk of a video's decode, or an image tile) on a seeded latent, for
ptdit-bench video, which runs it in a fresh process per shape and takes that process's peak RSS. It prints the peak
RSS reached once the session is loaded, before the call, so the call's own share is the difference.

    python -m runtime.bench_decode artifacts/ptdit-tiny-256-f8-pipeline --shape 8x32x32
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import click
import numpy as np

from ptdit.contract.commands import exit_codes
from ptdit.contract.errors import InputError


def peak_rss_bytes() -> int:
    """This program's peak RSS so far: its VmHWM (ru_maxrss counts the parent's RSS at the fork too, on Linux)."""
    try:
        with open("/proc/self/status") as status:
            return int(next(line.split()[1] for line in status if line.startswith("VmHWM:"))) * 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--shape", required=True, help="The decoder's latent shape, as pipeline.json names it (8x32x32).")
@click.option("--backend", type=click.Choice(["onnxruntime", "torch", "tensorrt"]), default="onnxruntime",
              show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="As ptdit-run's (which ptdit-bench video runs with its default too).")
def main(folder: Path, shape: str, backend: str, device: str) -> None:
    """Decode one seeded latent of SHAPE with FOLDER's decoder of that shape; JSON on stdout."""
    with exit_codes("python -m runtime.bench_decode", writes=False):
        from .pipeline.folder import component_path, load_pipeline
        from .session import open_session

        pipeline = load_pipeline(folder)
        tiles = pipeline.manifest.vae_decoder.tiles
        if shape not in tiles:
            raise InputError(f"{folder} has no VAE decoder of latent {shape}: it has {', '.join(sorted(tiles))}")
        with open_session(str(component_path(pipeline, tiles[shape], backend)), backend, device) as session:
            spec = session.artifact.spec("latent")
            latent = np.random.default_rng(0).standard_normal(spec.shape).astype(np.float32)
            loaded = peak_rss_bytes()
            start = time.perf_counter()
            session.set_inputs({"latent": latent})
            frames = session.run()["image"].shape
            seconds = time.perf_counter() - start
    click.echo(json.dumps({"shape": shape, "image": list(frames), "seconds": round(seconds, 3),
                           "loaded_peak_rss_bytes": loaded, "backend": session.backend}))


if __name__ == "__main__":
    main()
