"""A plain process supervisor for devices whose PID 1 is not systemd (containers, test machines).

Runs on the device (standard library only)::

    python -m deploy.flash.keeper --pidfile P -- fovea-agent serve --root R ...

It writes its own pid to ``P`` and the agent's to ``P.child``, restarts the agent when it exits
with a failure (backing off from 1 s to 30 s; like systemd's ``Restart=on-failure``), restarts it
at once on SIGHUP, and on SIGTERM stops it and exits.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

_BACKOFF_MAX_S = 30.0
_HEALTHY_AFTER_S = 60.0


class _Keeper:
    def __init__(self, argv: list[str], pidfile: Path) -> None:
        self.argv = argv
        self.pidfile = pidfile
        self.child_file = pidfile.with_name(pidfile.name + ".child")
        self.child: subprocess.Popen[bytes] | None = None
        self.stopping = False
        self.restart_now = False

    def _on_term(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True
        self._signal_child(signal.SIGTERM)

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self.restart_now = True
        self._signal_child(signal.SIGTERM)

    def _signal_child(self, sig: int) -> None:
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(sig)

    def _run_child(self) -> int:
        """Start the agent and wait for it to exit; its exit code. A start that fails (the
        agent's script gone for a moment while pip reinstalls it) counts as a failed run, to
        be retried after the back-off, instead of ending the keeper."""
        try:
            self.child = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL)
        except OSError as e:
            self.child = None
            print(f"keeper: cannot start {self.argv[0]}: {e}", flush=True)
            return 127
        self.child_file.write_text(f"{self.child.pid}\n")
        print(f"keeper: started {self.argv[0]} (pid {self.child.pid})", flush=True)
        try:
            return self.child.wait()
        except KeyboardInterrupt:
            return self.child.wait()

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        signal.signal(signal.SIGHUP, self._on_hup)
        self.pidfile.write_text(f"{os.getpid()}\n")
        backoff = 1.0
        try:
            while not self.stopping:
                started = time.monotonic()
                rc = self._run_child()
                if self.stopping:
                    break
                if self.restart_now:
                    self.restart_now, backoff = False, 1.0
                    continue
                if rc == 0:
                    print("keeper: the agent exited cleanly; not restarting", flush=True)
                    return 0
                if time.monotonic() - started > _HEALTHY_AFTER_S:
                    backoff = 1.0
                print(f"keeper: the agent exited {rc}; restarting in {backoff:g} s", flush=True)
                deadline = time.monotonic() + backoff
                while time.monotonic() < deadline and not (self.stopping or self.restart_now):
                    time.sleep(0.1)
                self.restart_now = False
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
            if self.child is not None and self.child.poll() is None:
                try:
                    self.child.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    self.child.kill()
                    self.child.wait()
            return 0
        finally:
            for path in (self.pidfile, self.child_file):
                path.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m deploy.flash.keeper --pidfile P -- COMMAND...``."""
    parser = argparse.ArgumentParser(prog="python -m deploy.flash.keeper")
    parser.add_argument("--pidfile", type=Path, required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to keep running after --")
    return _Keeper(command, args.pidfile).run()


if __name__ == "__main__":
    sys.exit(main())
