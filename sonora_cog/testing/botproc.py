"""Run a bot script as a subprocess, so end-to-end tests can kill it and start it again.

The script gets its configuration from the environment (``FAKE_DISCORD_URL``, ``FAKE_LAVALINK_URI``,
``SONORA_CONFIG``…); its stdout and stderr are captured line by line into :attr:`BotProcess.lines`
(and a log file if asked), so a test can wait for a line and read the log when it fails.

.. versionadded:: 0.1
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ("BotProcess",)

_log = logging.getLogger(__name__)


class BotProcess:
    """A bot script running under the current interpreter (``sys.executable``).

    Parameters
    ----------
    script:
        Path of the Python file to run.
    env:
        Extra environment variables (added to a copy of ``os.environ``; ``PYTHONUNBUFFERED=1`` is set).
    args:
        Extra command-line arguments.
    log_file:
        Also append every captured line to this file.
    name:
        Shown in log lines and failure reports.
    """

    def __init__(
        self,
        script: str | os.PathLike[str],
        *,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        cwd: str | os.PathLike[str] | None = None,
        log_file: str | os.PathLike[str] | None = None,
        name: str | None = None,
    ) -> None:
        self.script = Path(script)
        self.env = dict(env or {})
        self.args = list(args)
        self.cwd = cwd
        self.log_file = Path(log_file) if log_file is not None else None
        self.name = name or self.script.stem
        #: Every captured line (``[out]`` / ``[err]`` prefixed), across restarts.
        self.lines: list[str] = []
        self.returncodes: list[int] = []
        self.process: asyncio.subprocess.Process | None = None
        self._start_index = 0
        self._readers: list[asyncio.Task[None]] = []
        self._new_line = asyncio.Condition()
        self.start_count = 0

    # -- lifecycle -----------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self.process is not None and self.process.returncode is None

    @property
    def pid(self) -> int | None:
        """The process id of the current run."""
        return None if self.process is None else self.process.pid

    @property
    def output(self) -> str:
        """The whole captured log as one string."""
        return "\n".join(self.lines)

    async def start(self) -> None:
        """Start the script (no-op if it is running)."""
        if self.running:
            return
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        self._start_index = len(self.lines)
        self.start_count += 1
        self._append(f"[botproc] start #{self.start_count}: {sys.executable} {self.script} {' '.join(self.args)}")
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(self.script),
            *self.args,
            env=env,
            cwd=self.cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        assert self.process.stdout is not None and self.process.stderr is not None
        self._readers = [
            asyncio.create_task(self._pump(self.process.stdout, "out")),
            asyncio.create_task(self._pump(self.process.stderr, "err")),
        ]

    async def _pump(self, stream: asyncio.StreamReader, tag: str) -> None:
        while True:
            raw = await stream.readline()
            if not raw:
                return
            self._append(f"[{tag}] {raw.decode(errors='replace').rstrip()}")
            async with self._new_line:
                self._new_line.notify_all()

    def _append(self, line: str) -> None:
        self.lines.append(line)
        _log.debug("%s: %s", self.name, line)
        if self.log_file is not None:
            with self.log_file.open("a", encoding="utf-8") as fh:
                fh.write(line + "\n")

    def _signal(self, sig: signal.Signals) -> None:
        if self.running:
            assert self.process is not None
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)

    def kill(self) -> None:
        """Send SIGKILL (a crash: no cleanup runs)."""
        self._signal(signal.SIGKILL)

    def terminate(self) -> None:
        """Send SIGTERM (a graceful shutdown request)."""
        self._signal(signal.SIGTERM)

    async def wait(self, timeout: float | None = 30.0) -> int:  # noqa: ASYNC109 - a test helper deadline, like asyncio.wait_for
        """Wait for the process to exit (and its output to be read); return the exit code."""
        if self.process is None:
            raise RuntimeError("BotProcess was never started")
        async with asyncio.timeout(timeout):
            code = await self.process.wait()
            await asyncio.gather(*self._readers, return_exceptions=True)
        if len(self.returncodes) < self.start_count:
            self.returncodes.append(code)
            self._append(f"[botproc] exited with {code}")
        return code

    async def stop(self, timeout: float = 10.0) -> int | None:  # noqa: ASYNC109 - a test helper deadline, like asyncio.wait_for
        """SIGTERM, then SIGKILL if it is still alive after ``timeout``; return the exit code."""
        if self.process is None:
            return None
        self.terminate()
        try:
            return await self.wait(timeout)
        except TimeoutError:
            self.kill()
            return await self.wait(timeout)

    async def restart(self, *, graceful: bool = False, timeout: float = 10.0) -> None:  # noqa: ASYNC109 - a test helper deadline, like asyncio.wait_for
        """Kill (or, with ``graceful``, terminate) the process, wait for it, and start it again."""
        if self.running:
            if graceful:
                await self.stop(timeout)
            else:
                self.kill()
                await self.wait(timeout)
        await self.start()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.running:
            self.kill()
            await self.wait()

    # -- output --------------------------------------------------------------------------------------

    def lines_since_start(self) -> list[str]:
        """The lines captured since the latest :meth:`start`."""
        return self.lines[self._start_index :]

    async def wait_for_line(
        self,
        pattern: str | re.Pattern[str],
        timeout: float = 10.0,  # noqa: ASYNC109 - a test helper deadline, like asyncio.wait_for
        *,
        since_start: bool = True,
    ) -> re.Match[str]:
        """Wait for a captured line matching ``pattern`` (``re.search``); return the match.

        Only lines since the latest start are searched unless ``since_start`` is false. Raises
        :class:`TimeoutError` (with the log tail) if it does not appear, or :class:`RuntimeError` if the
        process exits first.
        """
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        index = self._start_index if since_start else 0
        try:
            async with asyncio.timeout(timeout), self._new_line:
                while True:
                    while index < len(self.lines):
                        match = regex.search(self.lines[index])
                        index += 1
                        if match:
                            return match
                    if not self.running and all(r.done() for r in self._readers):
                        raise RuntimeError(f"{self.name} exited before printing {regex.pattern!r}:\n{self.tail()}")
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._new_line.wait(), 0.2)
        except TimeoutError:
            raise TimeoutError(f"{self.name}: no line matching {regex.pattern!r}:\n{self.tail()}") from None

    def tail(self, count: int = 60) -> str:
        """The last ``count`` captured lines."""
        return "\n".join(self.lines[-count:])
