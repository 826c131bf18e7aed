"""PT-DiT in PyTorch: the reference model every other stage exports, builds and compares against; and, in
ptdit.contract, the facts every stage shares (docs/ARCHITECTURE.md).

Names are imported on first use, so that `ptdit.config`, `ptdit.resolution` and `ptdit.contract` (no torch) stay
cheap for command-line tools that only need the presets, the resolution table or the manifests.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "InputError": "contract.errors",
    "PRESETS": "config",
    "PTDiTConfig": "config",
    "preset": "config",
    "SUPPORTED_RESOLUTIONS": "resolution",
    "Geometry": "resolution",
    "geometry": "resolution",
    "window_for": "resolution",
    "Size": "resolution",
    "size_bins": "resolution",
    "PTDiT": "model",
    "load_checkpoint": "checkpoint",
    "read_state_dict": "checkpoint",
    "save_checkpoint": "checkpoint",
    "MacCount": "complexity",
    "attention_cost_ratio": "complexity",
    "count_macs": "complexity",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .checkpoint import load_checkpoint, read_state_dict, save_checkpoint
    from .complexity import MacCount, attention_cost_ratio, count_macs
    from .config import PRESETS, PTDiTConfig, preset
    from .contract.errors import InputError
    from .model import PTDiT
    from .resolution import SUPPORTED_RESOLUTIONS, Geometry, Size, geometry, size_bins, window_for


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ptdit' has no attribute '{name}'")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
