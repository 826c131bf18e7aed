"""The TensorRT facts every stage shares: the flavours (module, name, how to install), importing one by name,
and the one logger of a process per TensorRT module.

Full TensorRT 10.x / 11.x (`tensorrt`; `tensorrt_lean`, its small runtime for version-compatible plans) builds on,
and for, the GPU it runs on; TensorRT-RTX (`tensorrt_rtx`) builds ahead of time on any machine. Which flavour a
stage uses is that stage's choice (export: whichever can parse here; engines: --target; runtime: what built the
plan); the modules are imported here, lazily, by name.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

from .progress import Reporter

if TYPE_CHECKING:  # tensorrt_lean and tensorrt_rtx have the same logger API: typed against tensorrt's
    import tensorrt as trt


@dataclass(frozen=True)
class FlavourNames:
    module: str
    label: str
    install: str


TENSORRT_INSTALL = ("pip install --extra-index-url https://pypi.nvidia.com tensorrt-cu13 (TensorRT 11.x, CUDA 13 "
                    "drivers) or 'tensorrt-cu12>=10,<11' (TensorRT 10.x, CUDA 12 drivers); tensorrt-lean-cu13 runs "
                    "version-compatible plans")
FLAVOURS = {
    "tensorrt": FlavourNames("tensorrt", "TensorRT", TENSORRT_INSTALL),
    "lean": FlavourNames("tensorrt_lean", "TensorRT", TENSORRT_INSTALL),
    "rtx": FlavourNames("tensorrt_rtx", "TensorRT-RTX", "pip install tensorrt-rtx-cu13"),
}
BUILD_TARGETS = ("auto", "tensorrt", "rtx")  # ptdit-build --target: auto picks full TensorRT when importable
ERRORS_KEPT = 20


def import_flavour(name: str) -> ModuleType | None:
    """The module of a flavour ("tensorrt", "lean", "rtx"), or None when it is not installed."""
    try:
        return importlib.import_module(FLAVOURS[name].module)
    except ImportError:
        return None


_LOGGERS: dict[str, Any] = {}
# The engine's device memory as the builder logs it (INFO, TensorRT 10.x / 11.x and TensorRT-RTX alike; no GPU needed):
# weights, activations (the largest scratch of one execution context) and persistent memory.
DEVICE_MEMORY = re.compile(r"Total (Weights|Activation|Device Persistent) Memory: (\d+) bytes")


def logger_for(module: ModuleType, report: Reporter | None = None, verbose: bool = False) -> trt.ILogger:
    """The one logger of this process for a TensorRT module: TensorRT keeps the first logger it is given for the
    whole process, so every stage and every session hands it the same one. It keeps the last errors (`.errors`,
    for one-line reports) and passes warnings, and with `verbose` everything else too, to `report`. Each call
    clears the errors and sets the listener."""
    if module.__name__ not in _LOGGERS:
        _LOGGERS[module.__name__] = _logger_class(module)()
    logger = _LOGGERS[module.__name__]
    logger.errors.clear()
    logger.device_memory.clear()
    logger.report, logger.verbose = report, verbose
    return cast("trt.ILogger", logger)


def errors_of(logger: trt.ILogger, last: int = 2, none: str = "no error was logged") -> str:
    """The last errors the logger kept, on one line (`none` when it kept none)."""
    errors: list[str] = getattr(logger, "errors", [])
    return "; ".join(errors[-last:]) or none


def _logger_class(module: ModuleType) -> type:
    if TYPE_CHECKING:
        t = trt
    else:
        t = module

    class Logger(t.ILogger):
        def __init__(self) -> None:
            t.ILogger.__init__(self)
            self.errors: list[str] = []
            self.device_memory: dict[str, int] = {}  # what a build says the engine takes (DEVICE_MEMORY)
            self.report: Reporter | None = None
            self.verbose = False

        def log(self, severity: t.ILogger.Severity, msg: str) -> None:
            if severity in (t.ILogger.Severity.INTERNAL_ERROR, t.ILogger.Severity.ERROR):
                self.errors.append(msg)
                del self.errors[:-ERRORS_KEPT]
            elif (figure := DEVICE_MEMORY.match(msg)) is not None:
                self.device_memory[figure[1].lower().replace(" ", "_")] = int(figure[2])
            elif self.report is not None and (severity == t.ILogger.Severity.WARNING or self.verbose):
                self.report(f"    [TensorRT] {msg}")

    return Logger
