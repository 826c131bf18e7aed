"""What a TensorRT build shows and how it stops: its phases as indented lines, Ctrl-C answered at once (the build
runs in a worker thread and the progress monitor cancels it), and the plan streamed into its file."""

from __future__ import annotations

import signal
import threading
import time
from types import ModuleType
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, SupportsInt

from ptdit.contract.interrupts import Terminated, stopping_signals
from ptdit.contract.progress import Reporter

if TYPE_CHECKING:
    import tensorrt as trt

SHOWN_DEPTH = 2  # build phases nested deeper than this are not printed (TensorRT-RTX nests many small ones)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a build: the progress monitor cancelled it."""


def run_interruptibly(work: Callable[[], Any], cancel: threading.Event) -> Any:
    """work() in a worker thread, so that Ctrl-C and SIGTERM are seen at once while TensorRT builds: Python runs
    signal handlers in the main thread only, and not while it is inside a long native call, so the main thread
    waits in short joins instead. Either signal sets `cancel`, which also makes the progress monitor stop the
    build, and Interrupted (or Terminated, for SIGTERM) is raised within a poll interval, without waiting for
    TensorRT to wind down."""
    outcome: dict[str, Any] = {}
    received: list[int] = []

    def stop(signum: int, frame: object) -> None:
        received.append(signum)
        cancel.set()

    def interrupted() -> KeyboardInterrupt:
        return Terminated() if signal.SIGTERM in received else Interrupted()

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as e:  # handed to the waiting thread
            outcome["error"] = e

    worker = threading.Thread(target=target, name="tensorrt-build", daemon=True)
    in_main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, stop) for s in stopping_signals()} if in_main else {}
    try:
        worker.start()
        while worker.is_alive():
            worker.join(0.1)
            if cancel.is_set():
                raise interrupted()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if cancel.is_set():
        raise interrupted()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def make_progress_monitor(trt_module: ModuleType, report: Reporter) -> tuple[trt.IProgressMonitor, threading.Event]:
    """TensorRT's build phases as indented lines with their step counts; setting the returned event (Ctrl-C)
    makes the next step report cancel the build."""
    if TYPE_CHECKING:
        import tensorrt as trt
    else:
        trt = trt_module

    cancel = threading.Event()

    class Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._lock = threading.Lock()
            self._phases: dict[str, tuple[int, int, float]] = {}  # name -> (depth, steps, start)
            self._last_step_report = 0.0

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: SupportsInt) -> None:
            with self._lock:
                depth = self._phases[parent_phase][0] + 1 if parent_phase in self._phases else 0
                self._phases[phase_name] = (depth, int(num_steps), time.perf_counter())
                if depth <= SHOWN_DEPTH:
                    report(f"    {'  ' * depth}{phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name: str, step: SupportsInt) -> bool:
            with self._lock:
                now = time.perf_counter()
                if phase_name in self._phases and now - self._last_step_report > 5.0:
                    depth, steps, _ = self._phases[phase_name]
                    report(f"    {'  ' * depth}  {phase_name}: {int(step) + 1}/{steps}")
                    self._last_step_report = now
            return not cancel.is_set()

        def phase_finish(self, phase_name: str) -> None:
            with self._lock:
                depth, _, start = self._phases.pop(phase_name, (0, 0, time.perf_counter()))
                if depth <= SHOWN_DEPTH:
                    report(f"    {'  ' * depth}{phase_name}: done in {time.perf_counter() - start:.1f} s")

    return Monitor(), cancel


def make_file_writer(trt_module: ModuleType, f: BinaryIO) -> tuple[trt.IStreamWriter, list[OSError]]:
    """Streams the serialized plan into `f` as TensorRT produces it: the plan is never held in memory. The list
    receives the write error that stopped it (a full disk), for the caller to report instead of TensorRT's."""
    if TYPE_CHECKING:
        import tensorrt as trt
    else:
        trt = trt_module

    errors: list[OSError] = []

    class FileWriter(trt.IStreamWriter):
        def __init__(self) -> None:
            trt.IStreamWriter.__init__(self)

        def write(self, data: Any, size: Any = None) -> int:
            try:
                return f.write(data)
            except OSError as e:  # the disk is full: a short write stops TensorRT
                errors.append(e)
                return 0
            except ValueError:  # closed after Ctrl-C
                return 0

    return FileWriter(), errors
