"""One weights file for the graphs of several sizes (ptdit-export with more than one size): every graph keeps its own
.onnx, and each tensor it stores externally is written once, into the first graph's .onnx.data, and referenced there
by offset and length (ONNX's external data). The weights are the same at every size; what differs (a size's position
embedding, its masks) is stored next to them. onnx, ONNX Runtime and TensorRT's parser read a tensor at an offset of a
shared file as they read one of a file of its own."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

ALIGNMENT = 4096  # each tensor starts on a page, so that a reader may map it


def external_tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    """The tensors of a graph (initializers, and constants in every subgraph) whose bytes live in a file."""
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    return [tensor for tensor in _get_all_tensors(model) if uses_external_data(tensor)]


def _location(tensor: onnx.TensorProto) -> tuple[str, int, int]:
    entries = {entry.key: entry.value for entry in tensor.external_data}
    return entries["location"], int(entries.get("offset", 0)), int(entries["length"])


def _point(tensor: onnx.TensorProto, location: str, offset: int, length: int) -> None:
    del tensor.external_data[:]
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value


class SharedWeights:
    """Absorbs graph after graph: the first graph's data file becomes the shared one (indexed, not rewritten); each
    later graph's tensors are found there by their bytes or appended to it, the graph is rewritten to point at it, and
    its own data file is removed."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self._stored: dict[bytes, tuple[int, int]] = {}  # sha256 of a tensor's bytes -> (offset, length)

    def absorb(self, onnx_path: Path) -> Path:
        """Move the external tensors of the graph at `onnx_path` into the shared file; returns that file."""
        import onnx

        model = onnx.load(str(onnx_path), load_external_data=False)
        tensors = external_tensors(model)
        if not tensors:
            raise ValueError(f"{onnx_path} stores no tensor in a file: save it with external data to share them")
        folder = onnx_path.parent
        own = {folder / _location(tensor)[0] for tensor in tensors}
        if self.path is None:
            self.path = folder / _location(tensors[0])[0]
        if own == {self.path}:  # the first graph: its file is the shared one
            with self.path.open("rb") as data:
                for tensor in tensors:
                    _, offset, length = _location(tensor)
                    data.seek(offset)
                    self._stored.setdefault(hashlib.sha256(data.read(length)).digest(), (offset, length))
            return self.path
        with self.path.open("r+b") as shared:
            for tensor in tensors:
                name, offset, length = _location(tensor)
                with (folder / name).open("rb") as data:
                    data.seek(offset)
                    blob = data.read(length)
                key = hashlib.sha256(blob).digest()
                if key not in self._stored:
                    end = shared.seek(0, 2)
                    start = -(-end // ALIGNMENT) * ALIGNMENT
                    shared.write(b"\0" * (start - end) + blob)
                    self._stored[key] = (start, length)
                _point(tensor, self.path.name, *self._stored[key])
        onnx_path.write_bytes(model.SerializeToString())
        for path in own - {self.path}:
            path.unlink()
        return self.path
