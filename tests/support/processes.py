"""The command line as a user runs it: ``serve`` as a real subprocess, and one-shot commands."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from .polling import WAIT, wait_until
from .procfs import alive, descendants, listening_ports

__all__ = ["PYTHON", "Serve", "ServerProcess", "run_cli"]

PYTHON = sys.executable


def run_cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """``mtls-receiver ARGS...`` to completion, its output captured."""
    return subprocess.run(
        [PYTHON, "-m", "mtls_receiver", *args], capture_output=True, text=True, timeout=timeout
    )


class ServerProcess:
    """``mtls-receiver serve`` as a real subprocess, as a user runs it; the port is read from its log.

    It remembers every pid it had (supervisor and workers), so that ``cleanup`` leaves no orphan."""

    def __init__(self, *args: str, **popen: object) -> None:
        self.args = [PYTHON, "-m", "mtls_receiver", *args]
        self.popen = popen  # env, pass_fds, preexec_fn...
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []
        self.seen: set[int] = set()

    def start(self, timeout: float = WAIT) -> int:
        self.proc = subprocess.Popen(
            self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **self.popen
        )  # type: ignore[call-overload]
        ready: queue.Queue[int] = queue.Queue()
        threading.Thread(target=self._read, args=(ready,), daemon=True).start()
        try:
            port = ready.get(timeout=timeout)
        except queue.Empty:
            self.kill()
            raise AssertionError("server did not start:\n" + "".join(self.output)) from None
        self.pids()
        return port

    def _read(self, ready: queue.Queue[int]) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            match = re.search(r"listening on https://[^ ]*:(\d+)", line)
            if match:
                ready.put(int(match.group(1)))

    # --- signals --------------------------------------------------------------------------------

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(20)

    def signal(self, number: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(number)

    def cleanup(self) -> None:
        """SIGKILL the server and any worker it left behind (only pids this server had)."""
        self.kill()
        for pid in self.seen:
            ours = alive(pid) and b"mtls_receiver" in Path(f"/proc/{pid}/cmdline").read_bytes()
            if ours:  # not a pid the system gave to another process since
                os.kill(pid, signal.SIGKILL)

    # --- processes and ports --------------------------------------------------------------------

    def pids(self) -> list[int]:
        """The server's process and its workers (``workers = N`` starts N child processes)."""
        assert self.proc is not None
        found = descendants(self.proc.pid)
        self.seen.update(found)
        return found

    def workers(self) -> list[int]:
        """The worker processes: the supervisor's children."""
        return self.pids()[1:]

    def worker_admin_ports(self, port: int) -> list[int]:
        """Each worker's loopback admin port (logged at debug level only): its listening socket besides
        ``port``."""
        found = []
        for pid in self.workers():
            others = listening_ports(pid) - {port}
            assert len(others) == 1, f"worker {pid} listens on {others} besides {port}"
            found.append(others.pop())
        return found

    def admin_port(self) -> int:
        """The supervisor's admin port, from its log."""
        match = re.search(r"admin \(metrics, health\) on http://[^ ]*:(\d+)", "".join(self.output))
        assert match, "no admin address logged:\n" + "".join(self.output)
        return int(match.group(1))

    # --- its log --------------------------------------------------------------------------------

    def count(self, text: str) -> int:
        return "".join(self.output).count(text)

    def wait_for_output(self, text: str, timeout: float = 20.0) -> None:
        wait_until(
            lambda: text in "".join(self.output),
            timeout,
            lambda: f"{text!r} not in output:\n" + "".join(self.output),
            interval=0.02,
        )

    def wait_for_count(self, text: str, times: int, timeout: float = WAIT) -> None:
        wait_until(
            lambda: self.count(text) >= times,
            timeout,
            lambda: f"{text!r} {times} times in output:\n" + "".join(self.output),
        )


Serve = Callable[..., tuple[ServerProcess, int]]  # the ``serve`` fixture: (config, ...) -> (server, port)
