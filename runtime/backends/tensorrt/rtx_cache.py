"""TensorRT-RTX's runtime cache: RTX plans are compiled for the GPU when first run (JIT); the cache keeps
that work in a file, next to the plan by default, so that it is paid once per GPU, not once per process."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from ptdit.contract.files import write_atomically

from ...errors import RuntimeFailure

if TYPE_CHECKING:
    import tensorrt_rtx


def cache_path(plan: Path, compute_capability: str, cache_dir: Path | None = None) -> Path:
    """<plan stem>.sm<cc>.rtcache, next to the plan or in `cache_dir`: compiled kernels are per GPU."""
    return (cache_dir or plan.parent) / f"{plan.stem}.sm{compute_capability.replace('.', '')}.rtcache"


class RuntimeCache:
    def __init__(self, engine: Any, path: Path):
        rtx_engine = cast("tensorrt_rtx.ICudaEngine", engine)
        self.path = path
        self.config = rtx_engine.create_runtime_config()
        self.cache = self.config.create_runtime_cache()
        # A cache from another TensorRT-RTX version or GPU is refused by deserialize(): it is then rebuilt.
        self.loaded = path.is_file() and bool(self.cache.deserialize(path.read_bytes()))
        if not self.config.set_runtime_cache(self.cache):
            raise RuntimeFailure("TensorRT-RTX refused the runtime cache")
        self._engine = rtx_engine

    def create_context(self) -> Any:
        """An execution context that compiles into (and reads from) this cache."""
        return self._engine.create_execution_context(self.config)

    def close(self) -> None:
        """Write the cache (atomically; a directory that cannot be written only loses the cache)."""
        data = memoryview(cast(Any, self.cache.serialize()))
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(self.path, lambda tmp: tmp.write_bytes(data))
