"""The components of a pipeline folder (ptdit-export --pipeline) as sessions: tokenize and encode a prompt (or take the
stored embedding of the negative one), decode a latent tile by tile with the published blending (a video's chunk by
chunk), write the PNG. Every component runs on the chosen backend through the same sessions as the transformer;
runtime.PTDiTPipeline strings them together with the sampler."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ptdit.contract.arrays import read_arrays
from ptdit.contract.errors import Failure, InputError
from ptdit.contract.outputs import shown, write_error
from ptdit.contract.pipeline_manifest import PipelineSize, TilePlan
from ptdit.contract.sizes import Size
from ptdit.contract.vae_decode import decoder_shapes, temporal_chunks, tile_plan

from ..backends.interface import Session
from ..backends.tensorrt.flavour import TensorRTOptions
from ..sampling.text import non_finite
from ..session import open_session
from .folder import PipelineFolder, component_path
from .prompt import PromptTokenizer
from .tiling import decode_chunks, decode_tiled


class PipelineComponents:
    """A pipeline folder's components as sessions, opened once and reused for every prompt, checked to fit each
    other; a context manager. Prompt to image is runtime.PTDiTPipeline, which drives them."""

    def __init__(self, folder: PipelineFolder, backend: str = "auto", device: str = "auto", verify: bool = True,
                 tensorrt: TensorRTOptions | None = None, torch_precision: str | None = None,
                 open_component: Callable[[str], Session] | None = None):
        """open_component(file name in pipeline.json) -> its session: default, a session of `backend` on the
        component's file (a served pipeline passes sessions that call Triton models instead)."""
        self.folder = folder

        def open_local(name: str) -> Session:
            return open_session(str(component_path(folder, name, backend)), backend, device, verify=verify,
                                torch_precision=torch_precision, tensorrt=tensorrt)

        open_component = open_component or open_local

        m = folder.manifest
        self._open = open_component
        self.entries = {entry.size: entry for entry in m.size_entries()}
        self.sessions: dict[str, Session] = {}
        try:
            self.sessions["text_encoder"] = open_component(m.text_encoder.onnx)
            for shape, name in m.vae_decoder.tiles.items():
                self.sessions[f"vae {shape}"] = open_component(name)
            self.text_len = self.sessions["text_encoder"].artifact.spec("input_ids").shape[1]
            self.tokenizer = PromptTokenizer(folder.file(m.tokenizer), self.text_len)
            self.chunks = m.vae_decoder.chunks
            # latent (height, width) -> its decode's plan
            self.plans = {(e.height // e.plan.factor, e.width // e.plan.factor): e.plan for e in self.entries.values()}
            self.stored_negative = read_arrays(folder.file(m.negative_prompt.file))
            self._check_stored_negative()
            self.transformer(self.sizes[0])  # the default size's, checked with the rest before any work
        except BaseException:
            self.close()
            raise

    @property
    def sizes(self) -> tuple[Size, ...]:
        """The folder's image sizes, the default first."""
        return tuple(self.entries)

    def transformer(self, size: Size) -> Session:
        """The transformer session of one of the folder's sizes (opened on first use, checked to fit the rest)."""
        name = "transformer" if size == self.sizes[0] else f"transformer {size}"
        if name not in self.sessions:  # kept only once it is checked: a session that does not fit is closed
            session = self._open(self.entries[size].sampler_graph)
            try:
                self._check_fit(session, self.entries[size])
            except BaseException:
                session.close()
                raise
            self.sessions[name] = session
        return self.sessions[name]

    def _check_fit(self, session: Session, entry: PipelineSize) -> None:
        """The components must fit each other (a folder's files can be swapped and its manifest re-stamped): the
        text encoder's features, the stored negative prompt and the transformer's text input; the transformer's
        size, frames and latent, a video's chunks, and the VAE decoder tiles (and chunk lengths) its decode needs.
        Checked before any component runs."""
        transformer = session.artifact
        text_in = list(transformer.spec("text_embeds").shape[1:])  # [L, D]
        latent = transformer.spec("latent").shape  # [B, C, H, W], video [B, C, F, H, W]
        m = self.folder.manifest
        problems: list[str] = []
        frames_fit = True
        size = transformer.export.image_size
        if size != entry.size:
            problems.append(f"the transformer {entry.sampler_graph} is for {size} px, pipeline.json says {entry.size}")
        if transformer.export.frames != m.frames or (m.frames is None) != (self.chunks is None):
            problems.append(f"the transformer is for {transformer.export.frames or 'no'} latent frames, pipeline.json "
                            f"says {m.frames or 'no'} frames and {'no' if self.chunks is None else 'some'} VAE chunks")
            frames_fit = False
        elif self.chunks is not None and tuple(map(tuple, self.chunks)) != temporal_chunks(latent[2]):
            problems.append(f"its VAE chunks {[list(c) for c in self.chunks]} are not the published decode's chunks "
                            f"of {latent[2]} latent frames, {[list(c) for c in temporal_chunks(latent[2])]}")
            frames_fit = False
        if frames_fit and size == entry.size and size.width % latent[-1] == 0:  # the published decode's plan
            published = tile_plan(latent[-2], latent[-1], m.frames, size.width // latent[-1])
            if entry.plan != published:
                problems.append(f"its VAE tile plan {plan_text(entry.plan)} is not the published decode's plan of a "
                                f"{latent[-2]}x{latent[-1]} latent at {size} px, {plan_text(published)}")
                frames_fit = False
        encoded = list(self.sessions["text_encoder"].artifact.spec("text_embeds").shape[1:])
        if encoded != text_in:
            problems.append(f"the text encoder gives features {encoded}, the transformer takes {text_in}")
        stored = self.stored_negative
        if "text_embeds" not in stored or list(stored["text_embeds"].shape) != text_in or \
                "text_mask" not in stored or list(stored["text_mask"].shape) != text_in[:1]:
            shapes = {k: list(v.shape) for k, v in stored.items()}
            problems.append(f"the stored negative prompt holds {shapes}, the transformer takes text_embeds "
                            f"{text_in} and text_mask {text_in[:1]}")
        for shape in decoder_shapes(entry.plan, self.chunks, latent[-2], latent[-1]) if frames_fit else ():
            decoder = self.sessions.get(f"vae {'x'.join(map(str, shape))}")
            want = [1, latent[1], *shape]
            got = list(decoder.artifact.spec("latent").shape) if decoder else None
            if got != want:
                problems.append(f"the decode needs a VAE decoder of latent {want}, the folder has "
                                f"{'none' if got is None else got}")
        if problems:
            raise InputError(f"the components of {self.folder.path} do not fit each other: {'; '.join(problems)}; "
                             f"re-export the folder with ptdit-export --pipeline")

    def _check_stored_negative(self) -> None:
        """The stored negative prompt's features are the folder's, not the user's: NaN or inf there is a broken
        export, named by its file (a message about the negative prompt option would name what the user did not
        pass)."""
        bad = non_finite(self.stored_negative["text_embeds"])
        if bad:
            name = self.folder.manifest.negative_prompt.file
            raise InputError(f"{self.folder.file(name)} (the folder's stored negative prompt) holds {bad} NaN or "
                             f"infinite values in its text_embeds: re-export the folder with ptdit-export --pipeline")

    def encode(self, prompt: str) -> tuple[np.ndarray, np.ndarray]:
        ids, mask = self.tokenizer(prompt)
        session = self.sessions["text_encoder"]
        session.set_inputs({"input_ids": ids, "attention_mask": mask})
        return session.run()["text_embeds"][0], mask[0]

    def negative(self, prompt: str | None) -> tuple[np.ndarray, np.ndarray]:
        if prompt is not None:
            return self.encode(prompt)
        stored = self.stored_negative
        return stored["text_embeds"].astype(np.float32), stored["text_mask"].astype(np.int64)

    @property
    def is_video(self) -> bool:
        return self.chunks is not None

    def _tile_decoder(self, on_tile: Callable[[], None] | None) -> Callable[[np.ndarray], np.ndarray]:
        def tile(x: np.ndarray) -> np.ndarray:
            session = self.sessions[f"vae {'x'.join(map(str, x.shape[2:]))}"]
            session.set_inputs({"latent": np.ascontiguousarray(x, dtype=np.float32)})
            image = session.run()["image"]
            if on_tile:
                on_tile()
            return image

        return tile

    def plan(self, latent: np.ndarray) -> TilePlan:
        """The decode plan of a latent [1, C, (F,) H, W] of one of the folder's sizes."""
        return self.plans[(latent.shape[-2], latent.shape[-1])]

    def decode(self, latent: np.ndarray, on_tile: Callable[[], None] | None = None) -> np.ndarray:
        """latent [1, C, H, W] -> image [1, 3, 8H, 8W] in about [-1, 1], tile by tile (`on_tile` after each)."""
        return decode_tiled(latent, self.plan(latent), self._tile_decoder(on_tile))

    def decode_video(self, latent: np.ndarray, on_tile: Callable[[], None] | None = None) -> Iterator[np.ndarray]:
        """latent [1, C, F, H, W] -> the frames of each causal chunk in turn, [1, 3, f, 8H, 8W] in about [-1, 1]
        (1 + 4 (F - 1) frames in all), each chunk tile by tile."""
        assert self.chunks is not None
        return decode_chunks(latent, self.chunks, self.plan(latent), self._tile_decoder(on_tile))

    def tiles(self, size: Size) -> int:
        """How many decoder calls the decode of one latent of `size` makes."""
        plan = self.entries[size].plan
        return (len(plan.starts) * len(plan.column_starts) if plan.tiled else 1) * len(self.chunks or [()])

    def close(self) -> None:
        for session in self.sessions.values():
            session.close()
        self.sessions.clear()

    def __enter__(self) -> PipelineComponents:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def write_png(path: Path, pixels: np.ndarray, metadata: dict[str, Any]) -> None:
    """The image with the run's settings as PNG text chunks (`path` may be the output's temporary name), read back
    before it is published: a file that does not give the very pixels is a Failure."""
    try:
        from PIL import Image, PngImagePlugin
    except ImportError:
        raise InputError("writing a PNG needs Pillow: pip install pillow") from None
    info = PngImagePlugin.PngInfo()
    for key, value in metadata.items():
        info.add_text(key, str(value))
    try:
        Image.fromarray(pixels, "RGB").save(path, format="PNG", pnginfo=info)
    except OSError as e:
        raise write_error(e, path) from None
    try:
        with Image.open(path) as image:
            same = np.array_equal(np.asarray(image.convert("RGB")), pixels)
    except (OSError, SyntaxError, ValueError) as e:  # Pillow's words for a file it cannot read
        raise Failure(f"{shown(path)} was written but does not read back: {e}") from None
    if not same:
        raise Failure(f"{shown(path)} was written but reads back other pixels than were written")


def plan_text(plan: TilePlan) -> str:
    """A tile plan as pipeline.json writes it."""
    return json.dumps(plan.to_dict(), sort_keys=True)
