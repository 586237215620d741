"""A real ``redis-server`` on a free loopback port, in a temporary directory, for tests.

The Redis store is tested against the real server (no fakeredis), started by the test run and stopped
afterwards. Bot authors can use the same helper for their own tests::

    from sonora_cog.testing.redis_server import RedisServer

    with RedisServer() as server:          # or: server = RedisServer(); server.start() ... server.stop()
        settings = ...  # [storage] backend = "redis", redis_url = server.url

The server keeps its data in an append-only file fsynced on every write (``appendfsync always``), so
:meth:`RedisServer.kill` (SIGKILL) followed by :meth:`RedisServer.start` brings back every write the
server acknowledged, on the same port: that is how the tests take Redis down mid-session.

.. versionadded:: 0.2
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ("RedisServer", "RedisServerError", "find_redis_server", "free_port", "require_redis_server")

_STARTUP_TIMEOUT = 10.0


class RedisServerError(RuntimeError):
    """``redis-server`` is missing, or did not start."""


def find_redis_server() -> str | None:
    """Return the path of the ``redis-server`` executable, or ``None`` when it is not installed."""
    found = shutil.which("redis-server")
    if found is None and Path("/usr/bin/redis-server").is_file():
        found = "/usr/bin/redis-server"
    return found


def require_redis_server() -> None:
    """In a pytest test: skip when ``redis-server`` is missing, but fail when ``CI`` is set.

    CI must run the Redis tests (``scripts/test`` installs the server), so there a missing server is an
    error, not a reason to skip.
    """
    import pytest  # only tests call this

    if find_redis_server() is None:
        reason = "redis-server not installed (scripts/test installs it)"
        if os.environ.get("CI"):
            pytest.fail(reason + "; CI is set, so the Redis tests must run")
        pytest.skip(reason)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process bound to 127.0.0.1.

    Parameters
    ----------
    port:
        The port; a free one is chosen when omitted. It is kept across :meth:`stop` / :meth:`start`.
    password:
        Require this password (``requirepass``); the URL does not contain it.
    persistent:
        Keep an append-only file fsynced on every write, so a killed server restarts with its data.
    directory:
        Where the server keeps its files; a temporary directory (removed by :meth:`cleanup`) by default.
    executable:
        The ``redis-server`` binary (found on ``PATH`` by default).
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        password: str | None = None,
        persistent: bool = True,
        directory: str | os.PathLike[str] | None = None,
        executable: str | None = None,
    ) -> None:
        self.port = port or free_port()
        self.password = password
        self.persistent = persistent
        self._own_dir = directory is None
        self.directory = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="sonora-redis-"))
        self.executable = executable or find_redis_server()
        self.process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"<RedisServer {self.url} running={self.running}>"

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0`` (without the password)."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self.process is not None and self.process.poll() is None

    @property
    def log_path(self) -> Path:
        """The server's log file."""
        return self.directory / "redis.log"

    def _arguments(self) -> list[str]:
        assert self.executable is not None
        args = [
            self.executable,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--logfile",
            str(self.log_path),
            "--save",
            "",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
            "--databases",
            "4",
        ]
        if self.persistent:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        if self.password:
            args += ["--requirepass", self.password]
        return args

    def start(self, timeout: float = _STARTUP_TIMEOUT) -> None:
        """Start the server and wait until it answers ``PING``.

        Raises
        ------
        RedisServerError
            ``redis-server`` is not installed, exited, or did not answer within ``timeout`` seconds.
        """
        if self.running:
            return
        if self.executable is None:
            raise RedisServerError("redis-server is not installed (Debian/Ubuntu: apt-get install redis-server)")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self._arguments(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RedisServerError(f"redis-server exited with {self.process.returncode}:\n{self.log_tail()}")
            if self.ping():
                return
            time.sleep(0.02)
        self.kill()
        raise RedisServerError(f"redis-server did not answer on port {self.port} within {timeout}s:\n{self.log_tail()}")

    def ping(self) -> bool:
        """Whether the server answers ``PING`` right now (raw RESP, no client library)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                if self.password:
                    secret = self.password.encode()
                    sock.sendall(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(secret), secret))
                    if not sock.recv(64).startswith(b"+OK"):
                        return False
                sock.sendall(b"*1\r\n$4\r\nPING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server gracefully (SIGTERM); SIGKILL it if it does not exit within ``timeout``."""
        if self.process is None:
            return
        if self.running:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """SIGKILL the server (a crash). Writes it acknowledged survive when ``persistent``."""
        if self.process is None:
            return
        if self.running:
            self.process.kill()
        self.process.wait()
        self.process = None

    def restart(self) -> None:
        """Kill the server and start it again on the same port with the same data."""
        self.kill()
        self.start()

    def cleanup(self) -> None:
        """Stop the server and remove its directory if this object created it."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def log_tail(self, count: int = 20) -> str:
        """The last ``count`` lines of the server's log."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-count:])
        return "(no log)"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()
