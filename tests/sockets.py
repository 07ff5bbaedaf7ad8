"""modelyard on a real socket: `python -m serving` in a child process, as users start it.

TestClient calls the app in-process and never opens a socket, so what TCP does (keep-alive,
TCP_NODELAY, a body refused before it is sent) is only seen through a process like this one.
"""

import ctypes
import errno
import os
import socket
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from modelyard.processes import Child, answers_ok, free_port

_SYS_PIDFD_GETFD = 438
"""pidfd_getfd(2) (Linux 5.6+): the same number on every architecture."""


@dataclass(frozen=True)
class Served:
    """A running `python -m serving`: where it listens and its child process."""

    child: Child
    port: int

    @property
    def url(self) -> str:
        """Its base URL."""
        return f"http://127.0.0.1:{self.port}"

    def wait(self, path: str, timeout_s: float) -> None:
        """Until GET `path` answers 200; fails, with its log, if the process exits first."""
        self.child.wait_until(lambda: answers_ok(f"{self.url}{path}"), timeout_s)


@contextmanager
def serving_process(
    tracking_uri: str,
    settings: Mapping[str, str],
    log: Path,
    *,
    workers: int = 1,
    ready: str | None = "/health/ready",
    timeout_s: float = 240,
) -> Iterator[Served]:
    """`python -m serving` with MODELYARD_* `settings`, once `ready` answers 200 (at once
    when it is None: then see `Served.wait`); stopped afterwards."""
    port = free_port()
    argv = [sys.executable, "-m", "serving", "--host", "127.0.0.1", "--port", str(port)]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")},
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        **settings,
    }
    child = Child("serving", [*argv, "--workers", str(workers)], log, env, inherit=False)
    try:
        served = Served(child, port)
        if ready is not None:
            served.wait(ready, timeout_s)
        yield served
    finally:
        child.stop()


def read_response(connection: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length from a raw socket: status, headers, body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} bytes of a response")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = connection.recv(65536)
        if not chunk:
            raise ConnectionError("closed in the middle of a response body")
        body += chunk
    return int(status_line.split()[1]), headers, body


class SocketUnreachable(Exception):
    """This kernel or sandbox does not let the test look at another process's socket."""


def server_side_option(group: int, port: int, peer_port: int, level: int, option: int) -> int:
    """A socket option of the server's end of the connection 127.0.0.1:peer_port -> :port.

    The socket is found in whichever process of process group `group` holds it (a worker
    process in multi-worker mode) and duplicated with pidfd_getfd(2) to read the option.
    """
    inode = _connection_inode(port, peer_port)
    target = f"socket:[{inode}]"
    for pid in _group_members(group):
        try:
            descriptors = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in descriptors:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") != target:
                    continue
            except OSError:
                continue
            duplicate = _pidfd_getfd(pid, int(fd))
            with socket.socket(fileno=duplicate) as copy:
                return copy.getsockopt(level, option)
    raise LookupError(f"no process of group {group} holds the connection from port {peer_port}")


def _connection_inode(port: int, peer_port: int) -> int:
    """The inode of the server end of a loopback connection, from /proc/net/tcp."""
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], int(fields[9])
            if int(local.split(":")[1], 16) == port and int(remote.split(":")[1], 16) == peer_port:
                return inode
    raise LookupError(f"no connection :{peer_port} -> :{port} in /proc/net/tcp")


def _group_members(group: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == group:  # after the name: state, ppid, pgrp
            members.append(int(entry))
    return members


def _pidfd_getfd(pid: int, fd: int) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        duplicate = int(libc.syscall(_SYS_PIDFD_GETFD, pidfd, fd, 0))
    finally:
        os.close(pidfd)
    if duplicate < 0:
        code = ctypes.get_errno()
        if code in (errno.EPERM, errno.ENOSYS, errno.EACCES):
            raise SocketUnreachable(f"pidfd_getfd: {os.strerror(code)}")
        raise OSError(code, os.strerror(code))
    return duplicate
