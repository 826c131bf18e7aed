"""What one command writes, published together at the end or not at all (docs/ARCHITECTURE.md, "Outputs").

    with Outputs(force) as out:
        onnx = out.claim(out_dir / "model.onnx")      # before the work: locked, refused if it exists
        manifest = out.claim(out_dir / "model.json")
        ...write onnx and manifest (temporary names in a hidden folder next to their destinations)...
        out.commit()                                  # every file renamed into place, the last one last

Claiming an output locks it (a lock file next to it, held for the whole run: a second run for the same output
is refused in one line) and checks, under that lock, that it is not there yet unless `force`; so the check and
the publish are one atomic step. The lock file is also the test that the location is writable, made before any
work. Whatever stops the run before commit() (an error, Ctrl-C, SIGTERM, a full disk) leaves no output: the
temporary folders, the locks and the directories the run made are removed. Files and folders get the user's
umask. `published()` is what this process has published, so that a failure can say truly what was written.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from .errors import InputError, option
from .files import refuse_in_packages
from .interrupts import signals_deferred

_published: list[Path] = []
_staging_folders: dict[Path, Path] = {}  # every live temporary folder -> the directory it publishes into


def published() -> list[Path]:
    """Every output this process has published so far, in order."""
    return list(_published)


def forget_published() -> None:
    """A new command starts: nothing of its own is published yet."""
    _published.clear()


def shown(path: str | os.PathLike[str]) -> str:
    """`path` as a user knows it: a temporary name inside a staging folder becomes its destination's."""
    text = os.fspath(path)
    for staging, directory in _staging_folders.items():
        if text.startswith(f"{staging}{os.sep}"):
            return str(directory / text[len(str(staging)) + 1:])
    return text


def write_error(error: OSError, path: str | os.PathLike[str]) -> OSError:
    """A write the disk refused, naming `path` by the name its user knows where the writer named no file (Pillow)."""
    if error.filename is not None or error.errno is None:
        return error
    return OSError(error.errno, error.strerror, shown(path))


@dataclass
class _Claim:
    target: Path
    staged: Path
    folder: bool  # the output is a folder (the caller makes it at `staged`), else a file
    may_exist: bool  # a derived output: replaced without --force


class Outputs:
    def __init__(self, force: bool = False) -> None:
        self.force = force
        self._claims: list[_Claim] = []
        self._staging: dict[Path, Path] = {}  # destination directory -> its hidden temporary folder
        self._locks: list[tuple[Path, int]] = []
        self._created: list[Path] = []  # directories this run made
        self._trash: list[Path] = []
        self.committed = False

    def __enter__(self) -> Outputs:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def claim(self, target: Path, folder: bool = False, may_exist: bool = False) -> Path:
        """Lock `target` for this run and return the temporary path to write it at (a file, or with `folder` a
        folder the caller makes). Refused if another run holds it, if it exists (unless `force` or `may_exist`),
        or if what is there is of the other kind (a folder where a file goes: never removed for a file)."""
        if any(c.target.resolve() == target.resolve() for c in self._claims):
            raise ValueError(f"{target} is claimed twice")
        refuse_in_packages(target)
        directory = self._directory(target.parent)
        self._lock(directory / f".{target.name}.lock", target)
        try:
            if _exists(target) and target.is_dir() != folder:
                kind = "a folder" if target.is_dir() else "a file"
                raise InputError(f"{target} is {kind}, and this output is {'a folder' if folder else 'a file'}: "
                                 f"choose another name")
            if _exists(target) and not (self.force or may_exist):
                raise InputError(f"{target} already exists; pass {option('force', True)} to overwrite it")
        except InputError:
            self._unlock(*self._locks.pop())
            raise
        staging = self._staging.get(directory)
        if staging is None:
            _remove_stale(directory, target.name)  # what a killed run left: its lock is free, now ours
            staging = Path(tempfile.mkdtemp(dir=directory, prefix=f".{target.name}.partial."))
            self._staging[directory] = staging
            _staging_folders[staging] = directory
        claim = _Claim(target, staging / target.name, folder, may_exist)
        self._claims.append(claim)
        return claim.staged

    def commit(self) -> list[Path]:
        """Publish what was written: outputs this run did not make are moved away (a stale external-data file of
        an older artifact of the same name), then each new one is renamed into place in the order claimed (the
        manifest last, so that a reader who finds it finds everything it lists). Signals wait until it is done;
        what was published is recorded one output at a time, so that a failure half-way is told truly."""
        done = []
        with signals_deferred():
            for c in self._claims:
                if not _exists(c.staged) and not c.may_exist and _exists(c.target):
                    self._discard(c.target)
            for c in self._claims:
                if _exists(c.staged):
                    if c.folder and _exists(c.target):
                        self._discard(c.target)
                    os.replace(c.staged, c.target)
                    done.append(c.target)
                    _published.append(c.target)
            self.committed = True
        return done

    def close(self) -> None:
        """Remove the temporary folders, the locks and (unless committed) the directories this run made; a
        signal waits until that is done."""
        with signals_deferred():
            for folder in [*self._staging.values(), *self._trash]:
                shutil.rmtree(folder, ignore_errors=True)
                _staging_folders.pop(folder, None)
            self._staging.clear()
            self._trash.clear()
            for lock, fd in reversed(self._locks):
                self._unlock(lock, fd)
            self._locks.clear()
            if not self.committed:  # nothing on failure: not even the directories this run made (if still empty)
                for directory in sorted(self._created, key=lambda d: len(d.parts), reverse=True):
                    with contextlib.suppress(OSError):
                        directory.rmdir()
            self._created.clear()

    def _directory(self, directory: Path) -> Path:
        missing = [d for d in [directory, *directory.parents] if not d.exists()]
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"cannot make the output directory {directory} ({e.strerror}); choose another "
                             f"location") from None
        self._created += [d for d in missing if d not in self._created]
        if not directory.is_dir():
            raise InputError(f"{directory} is not a directory; choose another output location")
        return directory

    def _lock(self, lock: Path, target: Path) -> None:
        while True:
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as e:
                raise InputError(f"cannot write to {lock.parent} ({e.strerror}); choose a writable output "
                                 f"location") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                os.close(fd)
                if e.errno in (errno.EAGAIN, errno.EACCES):
                    raise InputError(f"{target} is being written by another run (pid {holder}); wait for it to "
                                     f"finish, or write somewhere else") from None
                raise InputError(f"cannot lock {lock} ({e.strerror}): this file system has no file locks; write "
                                 f"to a local disk") from None
            try:  # the holder before us may have removed the file we opened: lock the one that is there
                same = os.stat(lock).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self._locks.append((lock, fd))
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)

    @staticmethod
    def _unlock(lock: Path, fd: int) -> None:
        with contextlib.suppress(OSError):
            lock.unlink()  # while still holding it: the next run locks a new file (see _lock)
        os.close(fd)

    def _discard(self, path: Path) -> None:
        """Out of the way at once (into a hidden folder next to it), removed with the temporary folders."""
        trash = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old."))
        self._trash.append(trash)
        os.replace(path, trash / path.name)


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _remove_stale(directory: Path, name: str) -> None:
    for stale in [*directory.glob(f".{name}.partial.*"), *directory.glob(f".{name}.old.*")]:
        shutil.rmtree(stale, ignore_errors=True)
