"""Stopping on a signal. SIGINT (Ctrl-C) and SIGTERM (kill, systemd, Kubernetes, CI) stop a command the same way:
an exception unwinds the work, so every cleanup runs (temporary names, the directories the run made, locks),
and the command exits 130 or 143 (docs/ARCHITECTURE.md, "Command-line conventions")."""

from __future__ import annotations

import contextlib
import signal
import threading
from types import FrameType
from typing import Iterator


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is. Exit code 143 (128 + 15)."""


def exit_code_of(interrupt: KeyboardInterrupt) -> int:
    return 128 + (signal.SIGTERM if isinstance(interrupt, Terminated) else signal.SIGINT)


def interrupt_for(signum: int) -> KeyboardInterrupt:
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


def in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def stopping_signals() -> tuple[int, ...]:
    """The signals that stop a command: SIGTERM, and SIGINT unless the command was started with it ignored (as
    `sh -c 'ptdit-run ... &'` starts it; Python leaves an ignored SIGINT ignored, and so does every stage)."""
    ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    return (signal.SIGTERM,) if ignored else (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises Terminated in the main thread while the body runs (Python raises KeyboardInterrupt for
    SIGINT by itself)."""
    if not in_main_thread():  # signal handlers can only be set from the main thread
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """A SIGINT or SIGTERM that arrives while the body runs (a publish: a few renames; the start of a child) is
    acted on when the body has finished, so that it runs whole; if the body raised, the signal is raised in its
    place. The handlers are swapped with both signals blocked, so none falls between the two."""
    if not in_main_thread():
        yield
        return
    pending: list[int] = []
    deferred = stopping_signals()
    with _blocked(deferred):
        previous = {s: signal.signal(s, lambda signum, frame: pending.append(signum)) for s in deferred}
    try:
        yield
    finally:
        with _blocked(deferred):
            for s, handler in previous.items():
                signal.signal(s, handler)
        if pending:
            raise interrupt_for(pending[0])


@contextlib.contextmanager
def _blocked(signals: tuple[int, ...]) -> Iterator[None]:
    """The signals wait at the kernel while the body runs; delivered after it, to the handlers it set."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
