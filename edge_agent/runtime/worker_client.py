"""The agent's side of the inference worker (``worker.py``): start it under the Python that has
the GPU libraries, feed it batches through shared memory, and restart it when it dies.

While the worker starts, builds engines or restarts, the backend is *unavailable*: ``infer``
raises :class:`BackendUnavailable` (the service answers 503 with ``Retry-After``) and
:attr:`WorkerBackend.unavailable` says why, with the worker's progress, for readiness.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import socket
import subprocess
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.runtime import worker as protocol
from edge_agent.runtime.backend import (
    INPUT_NAME,
    Backend,
    BackendError,
    BackendUnavailable,
    Outputs,
)
from models import DR_GRADING, TaskSpec

Log = Callable[[str], None]
WORKER_FILE = Path(protocol.__file__)


class WorkerGone(BackendUnavailable):
    """The worker exited, hung up or stopped answering; it is being restarted."""


@dataclass(frozen=True)
class WorkerSettings:
    """Which Python runs the worker, and how long each step may take.

    ``backends``: the backends the worker hosts (TensorRT, and ONNX Runtime where JetPack's
    onnxruntime-gpu should be used instead of the agent's own CPU build).
    """

    python: str
    backends: tuple[str, ...] = ("tensorrt",)
    start_timeout_s: float = 60.0
    load_timeout_s: float = 3600.0
    """A Xavier takes minutes per engine; the worker reports progress meanwhile."""
    run_timeout_s: float = 60.0
    restart_delays_s: tuple[float, ...] = (0.1, 0.5, 1.0, 2.0, 5.0)

    def __post_init__(self) -> None:
        if not self.python:
            raise ValueError("worker python must name an interpreter")
        if min(self.start_timeout_s, self.load_timeout_s, self.run_timeout_s) <= 0:
            raise ValueError(f"worker timeouts must be positive: {self}")


class WorkerProcess:
    """One running worker and the socket to it; :meth:`call` sends a message, waits the reply."""

    def __init__(self, python: str) -> None:
        parent, child = socket.socketpair()
        try:
            self.proc = subprocess.Popen(
                # -I: no PYTHONPATH or user site: the worker sees its own Python's packages only
                [python, "-I", str(WORKER_FILE), "--fd", str(child.fileno())],
                pass_fds=(child.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
        except OSError as exc:
            parent.close()
            raise BackendError(f"cannot start the inference worker with {python}: {exc}") from None
        finally:
            child.close()
        self.sock = parent
        self.python = python
        self._timeout: float | None = None

    @property
    def pid(self) -> int:
        """The worker's process id."""
        return int(self.proc.pid)

    def call(
        self, message: Mapping[str, Any], timeout: float, progress: Log | None = None
    ) -> dict[str, Any]:
        """Send ``message`` and return the reply; WorkerGone when the worker exits, hangs up or
        is silent for ``timeout`` seconds (then it is killed), BackendError for an error reply."""
        try:
            if timeout != self._timeout:  # settimeout is a system call: once per change
                self.sock.settimeout(timeout)
                self._timeout = timeout
            protocol.send_message(self.sock, message)
            while True:
                reply = protocol.recv_message(self.sock)
                if reply is None:
                    raise WorkerGone(f"the inference worker exited ({self._exit()})")
                if "progress" in reply and progress is not None:
                    progress(str(reply["progress"]))
                    continue
                break
        except TimeoutError:
            self.kill()
            raise WorkerGone(
                f"the inference worker did not answer {message.get('op')!r} in {timeout:g} s"
            ) from None
        except (OSError, protocol.WorkerProtocolError) as exc:
            self.kill()
            raise WorkerGone(f"the inference worker hung up ({exc}; {self._exit()})") from None
        if "error" in reply:
            raise BackendError(f"inference worker ({self.python}): {reply['error']}")
        return reply

    def _exit(self) -> str:
        try:
            code = self.proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            return "still running"
        return f"exit code {code}" if code >= 0 else f"killed by signal {-code}"

    def kill(self) -> None:
        """Stop the worker now (idempotent)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.sock.close()

    def close(self) -> None:
        """Ask the worker to exit; kill it when it does not within 5 s."""
        if self.proc.poll() is None:
            try:
                self.sock.settimeout(1.0)
                self._timeout = 1.0
                protocol.send_message(self.sock, {"op": "close"})
                self.proc.wait(timeout=5.0)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.kill()


def probe_worker(python: str, timeout: float = 60.0) -> dict[str, Any]:
    """What the worker's Python has: its ``hello`` (TensorRT, ONNX Runtime, GPU, versions)."""
    proc = WorkerProcess(python)
    try:
        return proc.call({"op": "hello"}, timeout)
    finally:
        proc.close()


def _shared_dir() -> str:
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else tempfile.gettempdir()


class _Mapped:
    """The shared-memory file both sides map: made here, mapped there, then unlinked."""

    def __init__(self, rows: Mapping[str, tuple[int, ...]], max_batch: int) -> None:
        self.layout, self.size = protocol.tensor_layout(rows, max_batch)
        self.max_batch = max_batch
        fd, self.path = tempfile.mkstemp(prefix="fovea-worker-", dir=_shared_dir())
        try:
            os.ftruncate(fd, self.size)
            self.buffer = mmap.mmap(fd, self.size)
        finally:
            os.close(fd)
        self.views = protocol.tensor_views(self.buffer, self.layout, max_batch)

    def share(self, proc: WorkerProcess, timeout: float) -> None:
        """Have the worker map the file, then remove its name (the mappings stay)."""
        message = {"op": "map", "path": self.path, "size": self.size, "layout": self.layout}
        try:
            proc.call({**message, "max_batch": self.max_batch}, timeout)
        finally:
            Path(self.path).unlink(missing_ok=True)

    def close(self) -> None:
        self.views = {}
        with contextlib.suppress(BufferError):  # a view still refers to it: goes with the last
            self.buffer.close()


class WorkerBackend(Backend):
    """A model run by the inference worker: TensorRT (or ONNX Runtime) in another Python.

    ``load`` makes the worker's ``load`` message from its ``hello`` (TensorRT's version and the
    GPU decide the engines' cache keys); it is made once, at the first start. A worker that
    dies is restarted in the background with growing delays; meanwhile ``infer`` raises
    BackendUnavailable.
    """

    name = "worker"

    def __init__(
        self,
        model_path: Path,
        precision: str,
        *,
        image_size: int,
        task: TaskSpec = DR_GRADING,
        kind: str,
        settings: WorkerSettings,
        load: Callable[[dict[str, Any]], dict[str, Any]],
        log: Log = lambda s: None,
    ) -> None:
        super().__init__(model_path, precision, image_size, task)
        self._kind, self.settings, self._log = kind, settings, log
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._state = "starting the inference worker"
        self._restarts = 0
        self._providers: list[str] = []
        self._proc, self._shared = self._first_start(load)
        self._state = ""
        self._supervisor = threading.Thread(target=self._supervise, name="worker", daemon=True)
        self._supervisor.start()

    def _first_start(
        self, load: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> tuple[WorkerProcess, _Mapped]:
        proc = WorkerProcess(self.settings.python)
        try:
            self.hello = proc.call({"op": "hello"}, self.settings.start_timeout_s)
            self._load = {**load(self.hello), "op": "load"}
            self._max_batch = int(self._load["max_batch"])
            return proc, self._loaded(proc)
        except BaseException:
            proc.kill()
            raise

    def _loaded(self, proc: WorkerProcess) -> _Mapped:
        """Load the model in ``proc`` and share the tensors with it."""

        def progress(text: str) -> None:
            self._state = f"starting: {text}"
            self._log(f"inference worker: {text}")

        reply = proc.call(self._load, self.settings.load_timeout_s, progress)
        self._providers = [str(p) for p in reply.get("providers", [])]
        c, s = self.task.input.channels, self.image_size
        rows = {INPUT_NAME: (c, s, s), **self.task.output_shapes()}
        shared = _Mapped(rows, self._max_batch)
        try:
            shared.share(proc, self.settings.start_timeout_s)
        except BaseException:
            shared.close()
            raise
        return shared

    @property
    def kind(self) -> str:
        """The backend the worker hosts ("tensorrt" or "onnxruntime")."""
        return self._kind

    @property
    def unavailable(self) -> str | None:
        """Why the worker cannot run a batch now (starting, building, restarting), or None."""
        return self._state or None

    @property
    def providers(self) -> list[str]:
        """Where the worker runs the model."""
        return [*self._providers, f"worker ({self.hello.get('python')}, pid {self._proc.pid})"]

    @property
    def max_batch(self) -> int:
        """The most rows the shared tensors hold."""
        return self._max_batch

    def describe(self) -> dict[str, Any]:
        """As :meth:`Backend.describe`, with the hosted backend's name and the restarts."""
        return {**super().describe(), "backend": self._kind, "worker_restarts": self._restarts}

    def _run(self, images: np.ndarray) -> Outputs:
        n = len(images)
        with self._lock:
            if self._state:
                raise BackendUnavailable(f"the inference worker is {self._state}")
            proc, views = self._proc, self._shared.views
            views[INPUT_NAME][:n] = images
            try:
                proc.call({"op": "run", "n": n}, self.settings.run_timeout_s)
            except WorkerGone as exc:
                self._state = f"restarting: {exc}"
                raise
            names = self.output_names
            return Outputs(*(views[name][:n].copy() for name in names), names=names)

    def _supervise(self) -> None:
        """Wait for the worker to exit; unless closing, start another until one loads."""
        while not self._closing.is_set():
            proc = self._proc
            code = proc.proc.wait()
            if self._closing.is_set():
                return
            why = f"exited with code {code}" if code >= 0 else f"killed by signal {-code}"
            self._state = f"restarting: the inference worker {why}"
            self._log(f"inference worker {proc.pid} {why}; restarting")
            self._restart()

    def _restart(self) -> None:
        attempt = 0
        while not self._closing.is_set():
            delays = self.settings.restart_delays_s
            self._closing.wait(delays[min(attempt, len(delays) - 1)] if delays else 0.0)
            attempt += 1
            proc = WorkerProcess(self.settings.python)
            try:
                shared = self._loaded(proc)
            except BackendError as exc:
                proc.kill()
                self._state = f"restarting (attempt {attempt} failed: {exc})"
                self._log(f"inference worker restart {attempt} failed: {exc}")
                continue
            with self._lock:
                if self._closing.is_set():  # closed while this one loaded
                    proc.close()
                    shared.close()
                    return
                old, self._proc, self._shared = self._shared, proc, shared
                self._restarts += 1
                self._state = ""
            old.close()
            self._log(f"inference worker {proc.pid} serving again (restart {self._restarts})")
            return

    def close(self) -> None:
        """Stop the worker and the supervisor; release the shared memory."""
        self._closing.set()
        with self._lock:
            self._proc.close()
            self._shared.close()
        if self._supervisor.is_alive():
            self._supervisor.join(timeout=10.0)
