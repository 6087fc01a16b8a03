"""A running ``tegrastats`` whose latest line feeds :func:`edge_agent.telemetry.snapshot`.

Only where sysfs exposes no INA3221 power rails (some JetPack releases and carrier boards hide
them) and the ``tegrastats`` binary exists; elsewhere :meth:`TegrastatsReader.start` does
nothing and :meth:`TegrastatsReader.latest` stays None.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path

from edge_agent.telemetry.jetson import power_rails

TEGRASTATS = "tegrastats"
"""The binary's name, looked up on PATH (JetPack installs it as ``/usr/bin/tegrastats``)."""


class TegrastatsReader:
    """``tegrastats --interval MS`` in a subprocess, read by a background thread.

    ``start`` (idempotent) launches it when needed, ``latest`` is the last complete line,
    ``stop`` terminates the process and joins the thread. Also a context manager.
    """

    def __init__(
        self, root: Path = Path("/"), interval_ms: int = 1000, binary: str = TEGRASTATS
    ) -> None:
        """``root``: where ``sys/`` lives (to check for sysfs rails first)."""
        if interval_ms < 10:
            raise ValueError(f"tegrastats interval_ms must be >= 10, got {interval_ms}")
        self.root = Path(root)
        self.interval_ms = interval_ms
        self.binary = binary
        self.reason = "not started"
        self._line: str | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        """Whether the tegrastats process runs now."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> bool:
        """Start tegrastats unless sysfs has the rails or the binary is missing; True if it runs.

        ``reason`` says why it does not run.
        """
        if self.running:
            return True
        source, rails = power_rails(self.root)
        if rails:
            self.reason = f"not needed: power rails from {source}"
            return False
        path = shutil.which(self.binary)
        if path is None:
            self.reason = f"unavailable: {self.binary} not found on PATH"
            return False
        try:
            self._proc = subprocess.Popen(
                [path, "--interval", str(self.interval_ms)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                bufsize=1,
            )
        except OSError as exc:
            self.reason = f"unavailable: {path} did not start ({exc})"
            return False
        self._thread = threading.Thread(target=self._read, name="tegrastats", daemon=True)
        self._thread.start()
        self.reason = f"running: {path} --interval {self.interval_ms}"
        return True

    def _read(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        for raw in proc.stdout:
            line = raw.strip()
            if line:
                with self._lock:
                    self._line = line

    def latest(self) -> str | None:
        """The last line tegrastats printed, or None (not running, or nothing yet)."""
        with self._lock:
            return self._line

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate tegrastats (killed after ``timeout``) and join the reader thread."""
        proc, thread = self._proc, self._thread
        self._proc = self._thread = None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if thread is not None:  # the process is gone: its output ends and the thread with it
            thread.join(timeout)
        if proc is not None and proc.stdout is not None:
            proc.stdout.close()
        self.reason = "stopped"

    def __enter__(self) -> TegrastatsReader:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
