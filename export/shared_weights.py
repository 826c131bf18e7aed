"""One weights file for the graphs of several sizes (ptdit-export with more than one size): every graph keeps its own
.onnx, and each tensor it stores externally is written once, into the run's shared weights file, and referenced there
by offset and length (ONNX's external data). The weights are the same at every size; what differs (a size's position
embedding) is stored next to them. onnx, ONNX Runtime and TensorRT's parser read a tensor at an offset of a shared
file as they read one of a file of its own.

The file is named after the graphs that share it (`shared_name`): a later run of other graphs, even with --force,
writes a file of another name, so it never changes the weights of a graph it does not export again."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    import onnx

ALIGNMENT = 4096  # each tensor starts on a page, so that a reader may map it


def shared_name(stems: Sequence[str], prefix: str) -> str:
    """The weights file of these graphs: `prefix` (the model, batch and precision) and a digest of their stems."""
    digest = hashlib.sha256("\n".join(sorted(stems)).encode()).hexdigest()[:12]
    return f"{prefix}-weights-{digest}.onnx.data"


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
    """Absorbs graph after graph into the file at `path`: each tensor found there by its bytes or appended to it
    (page-aligned), the graph rewritten to point at it, its own data file removed."""

    def __init__(self, path: Path) -> None:
        self.path = path
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
        with self.path.open("ab+") as shared:
            for tensor in tensors:
                name, offset, length = _location(tensor)
                with (folder / name).open("rb") as data:
                    data.seek(offset)
                    blob = data.read(length)
                if len(blob) != length:
                    raise ValueError(f"{folder / name} ends before the {length} bytes of {tensor.name} at {offset}")
                key = hashlib.sha256(blob).digest()
                if key not in self._stored:
                    end = shared.seek(0, 2)
                    start = -(-end // ALIGNMENT) * ALIGNMENT
                    shared.write(b"\0" * (start - end) + blob)
                    self._stored[key] = (start, length)
                _point(tensor, self.path.name, *self._stored[key])
            size = shared.seek(0, 2)
        if any(_location(t)[1] + _location(t)[2] > size for t in tensors):  # every tensor inside the file
            raise ValueError(f"{self.path} is shorter than the tensors {onnx_path.name} points at")
        onnx_path.write_bytes(model.SerializeToString())
        for path in own - {self.path}:
            path.unlink()
        return self.path
