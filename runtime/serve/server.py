"""A local tritonserver on a model repository: started, waited for until its models are ready, stopped cleanly.

    with LocalServer(find_server(), Path("repo"), Ports(8000, 8001, 8002)) as server:
        print(server.grpc_url)

stop() sends SIGTERM: Triton stops taking requests, lets the in-flight ones finish (up to exit_timeout_s) and
unloads its models. A server that cannot start (a port taken, a model that fails to load, a missing backend)
is an error of one line taken from its log, raised as soon as the process exits, never a hang.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from ptdit.contract.errors import Failure, InputError, option
from ptdit.contract.numbers import Range

from .environment import TritonServer

PORT_TAKEN = re.compile(r"(?i)[^\n\"]*(address already in use|already in use)[^\n\"]*")
LOG_ERROR = re.compile(r'^E\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] "?(.*?)"?$')
IGNORED = ("CudaDriverHelper", "NVML", "DCGM", "unable to get CUDA device count", "pinned memory")


@dataclass(frozen=True)
class Ports:
    RANGE = Range(1, 65535, integer=True)

    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002

    def __post_init__(self) -> None:
        """Three valid, different ports, refused before any start (Triton would bind the first and fail the next)."""
        named = (("http", self.http), ("grpc", self.grpc), ("metrics", self.metrics))
        for name, port in named:
            self.RANGE.check(option(f"{name}_port"), port)
        for i, (name, port) in enumerate(named):
            for other, port_of_other in named[i + 1:]:
                if port == port_of_other:
                    raise InputError(f"{option(name + '_port')} and {option(other + '_port')} are both {port}: the "
                                     f"HTTP, gRPC and metrics endpoints each need a port of their own")

    def check_free(self, host: str) -> None:
        """Refuse a port another program listens on before starting (Triton would log it and exit)."""
        for name, port in (("http", self.http), ("grpc", self.grpc), ("metrics", self.metrics)):
            check_port_free(host, port, f"--{name}-port", f" ({name})")


def check_port_free(host: str, port: int, flag: str, what: str = "") -> None:
    """Refuse a port another program listens on, naming the option that chooses it (`flag`: a flag, or an
    errors.option marker)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as a server binds: TIME_WAIT is no listener
        try:
            s.bind((host, port))
        except OSError:
            raise InputError(f"port {port}{what} on {host} is taken: pass {flag} with a free one, or stop "
                             f"what listens there") from None


def free_ports(host: str = "127.0.0.1") -> Ports:
    """Three ports nothing listens on now (the tests' servers)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(3)]
    try:
        for s in sockets:
            s.bind((host, 0))
        http, grpc, metrics = (s.getsockname()[1] for s in sockets)
    finally:
        for s in sockets:
            s.close()
    return Ports(http, grpc, metrics)


class LocalServer:
    def __init__(self, server: TritonServer, repository: Path, ports: Ports = Ports(), host: str = "127.0.0.1",
                 exit_timeout_s: int = 60, log: Path | None = None) -> None:
        self.server, self.repository, self.ports, self.host = server, repository, ports, host
        self.exit_timeout_s = exit_timeout_s
        # A log of our own is removed after a clean stop and after a stop before ready (a Ctrl-C while the models
        # load), kept when an error names it; a log the user asked for (`log`) is always kept.
        self.own_log = log is None
        self.log_reported = False  # an error raised names self.log: it is kept
        self.log = log or Path(tempfile.gettempdir()) / "tritonserver-(not started).log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"{self._address}:{self.ports.http}"

    @property
    def grpc_url(self) -> str:
        return f"{self._address}:{self.ports.grpc}"

    @property
    def _address(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 address, as HOST:PORT writes it

    @property
    def metrics_url(self) -> str:
        return f"http://{self._address}:{self.ports.metrics}/metrics"

    def command(self) -> list[str]:
        command = [str(self.server.binary), "--model-repository", str(self.repository.resolve()),
                   "--http-address", self.host, "--http-port", str(self.ports.http),
                   "--grpc-address", self.host, "--grpc-port", str(self.ports.grpc),
                   "--metrics-address", self.host, "--metrics-port", str(self.ports.metrics),
                   "--exit-timeout-secs", str(self.exit_timeout_s), "--disable-auto-complete-config"]
        if self.server.backend_dir is not None:
            command += ["--backend-directory", str(self.server.backend_dir)]
        return command

    def start(self, timeout_s: float = 300.0) -> LocalServer:
        """Start the server and wait until it and its models are ready."""
        self.ports.check_free(self.host)
        if self.own_log:
            handle, name = tempfile.mkstemp(prefix="tritonserver-", suffix=".log")
            os.close(handle)
            self.log = Path(name)
        try:
            with open(self.log, "wb") as log:
                # A session of its own: a Ctrl-C at the terminal reaches us, and we stop the server in order.
                self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                                env=self.server.environ(), start_new_session=True)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    self.process = None
                    raise self._failure()
                if self.ready():
                    return self
                time.sleep(0.2)
            self.log_reported = True
            raise Failure(f"tritonserver was not ready after {timeout_s:.0f} s (its log: {self.log})")
        except BaseException:  # a failure, or Ctrl-C / SIGTERM while the models load: no server is left behind
            self.stop()
            if not self.log_reported:  # nothing points at it: no log is left behind either
                self._remove_own_log()
            raise

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _failure(self) -> Exception:
        """The reason the server exited, in one line, from its log."""
        text = self.log.read_text(errors="replace")
        taken = PORT_TAKEN.search(text)
        if taken:
            return InputError(f"tritonserver could not listen on its ports ({taken.group(0).strip()}): pass free "
                              f"ones with --http-port, --grpc-port, --metrics-port")
        errors = [m.group(1) for line in text.splitlines() if (m := LOG_ERROR.match(line.strip()))
                  and not any(word in line for word in IGNORED)]
        why = errors[0] if errors else (text.strip().splitlines() or ["no output"])[-1]
        why = why.split("\\n")[0].removeprefix("ERROR: ")  # the Python backend logs a traceback, escaped, after it
        self.log_reported = True
        return Failure(f"tritonserver exited before it was ready: {why} (its log: {self.log})")

    def wait(self) -> int:
        """Block until the server exits by itself; its exit code."""
        assert self.process is not None, "start() first"
        return self.process.wait()

    def stop(self) -> int | None:
        """SIGTERM, then wait for the in-flight requests and the unload; the exit code (None: not running)."""
        process = self.process
        if process is None:
            return None
        try:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(self.exit_timeout_s + 30)
        except BaseException as error:  # it did not stop in time, or a second Ctrl-C: it stops now
            process.kill()
            process.wait()
            if not isinstance(error, subprocess.TimeoutExpired):
                raise
        finally:
            self.process = None
        if not self.log_reported and (process.returncode == 0 or self._log_is_empty()):
            self._remove_own_log()  # kept where an error names it
        return process.returncode

    def _log_is_empty(self) -> bool:
        try:
            return self.log.stat().st_size == 0
        except OSError:
            return False

    def _remove_own_log(self) -> None:
        if self.own_log:
            self.log.unlink(missing_ok=True)

    def __enter__(self) -> LocalServer:
        return self.start() if self.process is None else self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()
