"""Counters of what crosses between the host and a backend: the proof that a loop keeps its state on the device.

Bytes count every copy between the caller's host memory and the backend's own buffers: over PCIe on a GPU
backend; on ONNX Runtime's CPU provider, the arrays handed to and taken from the session. A sync is a point
where the host waits for a device to finish (a CUDA stream synchronisation, or ONNX Runtime's CUDA run
returning); a CPU backend has no device, so it never counts one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class Transfers:
    to_device_bytes: int = 0
    from_device_bytes: int = 0
    syncs: int = 0

    def snapshot(self) -> Transfers:
        return Transfers(self.to_device_bytes, self.from_device_bytes, self.syncs)

    def since(self, earlier: Transfers) -> Transfers:
        return Transfers(self.to_device_bytes - earlier.to_device_bytes,
                         self.from_device_bytes - earlier.from_device_bytes, self.syncs - earlier.syncs)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)
