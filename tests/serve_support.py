"""``lmdm-bridge serve`` as a real process, driven over real UDP sockets.

:class:`Served` starts the command, waits until it answers ``/lmdm/ping`` (the daemon binds its
OSC port only after the model is loaded and warmed up, so an answer means ready), and offers the
few calls the daemon tests share: send a message, wait for a reply, read ``/lmdm/status`` as a
dict, stop with SIGTERM. Replies arrive on a socket of the test's own bound to ``--reply-port``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from pythonosc.osc_message import OscMessage
from pythonosc.udp_client import SimpleUDPClient

EXE = str(Path(sys.executable).with_name("lmdm-bridge"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """``lmdm-bridge serve --bundle BUNDLE --osc-port P --reply-port R *args`` in a process.

    ``env``: extra environment (e.g. the JACK server's name); ``ready_timeout``: seconds to wait
    for the first ``/lmdm/pong``. The daemon's stderr goes to ``log`` (read it on failure with
    :meth:`log_text`)."""

    def __init__(self, bundle: Path, *args: str, log: Path, env: dict | None = None,
                 ready_timeout: float = 120.0) -> None:
        self.osc_port, self.reply_port = free_port(), free_port()
        self.replies = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.replies.bind(("127.0.0.1", self.reply_port))
        self.log = log
        self._log_file = open(log, "w")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [EXE, "serve", "--bundle", str(bundle), "--osc-port", str(self.osc_port),
             "--reply-port", str(self.reply_port), *args],
            stdout=self._log_file, stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
        self.client = SimpleUDPClient("127.0.0.1", self.osc_port)
        try:
            self._wait_ready(ready_timeout)
        except BaseException:
            self.close()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.send("/lmdm/ping")
            if self.receive("/lmdm/pong", timeout=0.5, missing_ok=True) is not None:
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited with {self.proc.returncode}:\n"
                                     f"{self.log_text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"serve did not answer within {timeout} s:\n"
                                     f"{self.log_text()}")

    def log_text(self) -> str:
        self._log_file.flush()
        return self.log.read_text(errors="replace")[-4000:]

    def send(self, address: str, *args) -> None:
        self.client.send_message(address, list(args))

    def send_raw(self, data: bytes) -> None:
        self.client._sock.sendto(data, ("127.0.0.1", self.osc_port))

    def receive(self, address: str, timeout: float = 10.0, *,
                missing_ok: bool = False) -> OscMessage | None:
        """The next reply to ``address`` (others are skipped); None only with ``missing_ok``."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.replies.settimeout(max(0.01, left))
            try:
                data, _ = self.replies.recvfrom(65536)
            except TimeoutError:
                break
            try:
                message = OscMessage(data)
            except Exception:  # a bundle or something we did not ask for
                continue
            if message.address == address:
                return message
        if missing_ok:
            return None
        raise AssertionError(f"no {address} reply within {timeout} s:\n{self.log_text()}")

    def drain(self) -> list[OscMessage]:
        """Every reply waiting on the socket now."""
        messages = []
        self.replies.settimeout(0.0)
        while True:
            try:
                data, _ = self.replies.recvfrom(65536)
            except (BlockingIOError, TimeoutError):
                return messages
            try:
                messages.append(OscMessage(data))
            except Exception:
                continue

    def status(self) -> dict:
        """``/lmdm/status`` as ``{key: value}``."""
        self.drain()
        self.send("/lmdm/status")
        args = self.receive("/lmdm/status").params
        return dict(zip(args[::2], args[1::2], strict=True))

    def wait_for(self, predicate, timeout: float = 60.0, what: str = "the condition") -> dict:
        """Poll the status until ``predicate(status)``; returns that status."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status()
            if predicate(status):
                return status
            assert self.proc.poll() is None, f"serve exited:\n{self.log_text()}"
            assert time.monotonic() < deadline, f"{what} not reached: {status}"
            time.sleep(0.1)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, then the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.replies.close()
        self._log_file.close()
