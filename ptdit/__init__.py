"""PT-DiT in PyTorch: the reference model every other stage exports, builds and compares against."""

from .checkpoint import load_checkpoint, read_state_dict, save_checkpoint
from .complexity import MacCount, attention_cost_ratio, count_macs
from .config import PRESETS, PTDiTConfig, preset
from .errors import InputError
from .model import PTDiT
from .resolution import SUPPORTED_RESOLUTIONS, Geometry, geometry, window_for

__all__ = [
    "PRESETS",
    "SUPPORTED_RESOLUTIONS",
    "Geometry",
    "InputError",
    "MacCount",
    "PTDiT",
    "PTDiTConfig",
    "attention_cost_ratio",
    "count_macs",
    "geometry",
    "load_checkpoint",
    "preset",
    "read_state_dict",
    "save_checkpoint",
    "window_for",
]
