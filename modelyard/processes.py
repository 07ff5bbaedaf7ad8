"""Child processes of the embedded stack: started in their own group, stopped in order."""

import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

_PR_SET_PDEATHSIG = 1


class StartupError(Exception):
    """A component could not start; the message says which and why."""


def ensure_free(host: str, port: int, setting: str) -> None:
    """Fail with a message naming the setting when `host:port` is already taken."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise StartupError(
                f"port {port} on {host} is already in use; free it or set {setting}"
            ) from exc


def _die_with_parent() -> None:
    """In the child: receive SIGTERM if the parent dies, so no process is left behind."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Child:
    """One long-running component, its output going to a log file."""

    def __init__(self, name: str, argv: list[str], log: Path, env: Mapping[str, str]) -> None:
        self.name = name
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **env},
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    def wait_until(self, ready: Callable[[], bool], timeout_s: float) -> float:
        """Poll `ready` until it holds; return the seconds it took. Fails if the child exits."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if self.process.poll() is not None:
                raise StartupError(
                    f"{self.name} exited with code {self.process.returncode}; "
                    f"last lines of {self.log}:\n{self.tail()}"
                )
            if ready():
                return time.monotonic() - started
            time.sleep(0.2)
        raise StartupError(f"{self.name} was not ready after {timeout_s:.0f} s; see {self.log}")

    def stop(self, grace_s: float = 20) -> None:
        """SIGTERM the child's whole process group; SIGKILL what is left after `grace_s`."""
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def tail(self, lines: int = 15) -> str:
        """The last lines the child wrote."""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
