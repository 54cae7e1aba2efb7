"""A JACK server of a test's own (dummy driver: no sound card) and a JACK client that plays
test tones into another client's inputs and records its outputs.

Import after checking that jackd and JACK-Client exist (:func:`missing` says what is absent).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from contextlib import contextmanager

import numpy as np


def missing() -> str | None:
    """Why JACK tests cannot run here, or None."""
    if shutil.which("jackd") is None or shutil.which("jack_lsp") is None:
        return "jackd is not installed (Debian: apt-get install jackd2)"
    try:
        import jack  # noqa: F401
    except (ImportError, OSError):
        return "JACK-Client is not installed (pip install JACK-Client)"
    return None


@contextmanager
def jack_server(name: str, rate: int, period: int, timeout: float = 10.0):
    """Run ``jackd -n NAME -d dummy`` until the ``with`` block ends; yields the name. Clients
    reach it with ``JACK_DEFAULT_SERVER=NAME`` (set ``JACK_NO_START_SERVER=1`` too, so a
    client never starts a server of its own by accident)."""
    proc = subprocess.Popen(["jackd", "-n", name, "-d", "dummy", "-r", str(rate), "-p",
                             str(period)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while b"system:" not in subprocess.run(["jack_lsp", "-s", name],
                                               capture_output=True).stdout:
            if proc.poll() is not None:
                raise RuntimeError(f"jackd exited: {proc.stderr.read().decode(errors='replace')}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"jackd did not start within {timeout} s")
            time.sleep(0.1)
        yield name
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Probe:
    """A JACK client with ``rec_1..n`` inputs and ``sig_1..n`` outputs.

    Output ``sig_k`` plays a sine of ``tones[k]`` Hz (whole numbers, so that the table's phase
    repeats every second) at ``amplitude``; while :attr:`armed`, the inputs are recorded into
    :attr:`recording` ``(frames, n)``, :attr:`recorded` frames so far. The process callback
    runs in JACK's thread and only copies.
    """

    def __init__(self, server: str, seconds: float, tones: tuple[int, ...] = (997, 1499),
                 amplitude: float = 0.25, name: str = "probe") -> None:
        import jack

        self.client = jack.Client(name, servername=server, no_start_server=True)
        self.rate = self.client.samplerate
        n = len(tones)
        self.rec = [self.client.inports.register(f"rec_{k + 1}") for k in range(n)]
        self.sig = [self.client.outports.register(f"sig_{k + 1}") for k in range(n)]
        self.recording = np.zeros((int(seconds * self.rate), n), np.float32)
        self.recorded = 0
        self.armed = False
        self.phase = 0
        t = np.arange(2 * self.rate) / self.rate  # two seconds: any period fits from any start
        self.tables = [(amplitude * np.sin(2 * np.pi * f * t)).astype(np.float32) for f in tones]
        self.client.set_process_callback(self._process)

    def _process(self, frames: int) -> None:
        start = self.phase % self.rate
        for port, table in zip(self.sig, self.tables, strict=True):
            port.get_array()[:] = table[start:start + frames]
        self.phase += frames
        if self.armed:
            n = min(frames, len(self.recording) - self.recorded)
            for k, port in enumerate(self.rec):
                self.recording[self.recorded:self.recorded + n, k] = port.get_array()[:n]
            self.recorded += n

    def __enter__(self) -> Probe:
        self.client.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        self.armed = False
        self.client.deactivate()
        self.client.close()

    def patch(self, client: str, timeout: float = 10.0) -> None:
        """Record ``client``'s outputs and feed its inputs (in port order), instead of whatever
        was connected to its inputs before (PortAudio connects the system ports itself). A
        client registers its ports one by one, so wait until it has as many as the probe."""
        deadline = time.monotonic() + timeout
        while True:
            ports = self.client.get_ports(f"{client}:", is_audio=True)
            outs = sorted((p.name for p in ports if p.is_output), key=_number)
            ins = sorted((p.name for p in ports if p.is_input), key=_number)
            if len(outs) >= len(self.rec) and len(ins) >= len(self.sig):
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"{client} has outputs {outs} and inputs {ins} after "
                                     f"{timeout} s")
            time.sleep(0.05)
        for port in ins:
            for source in self.client.get_all_connections(port):
                self.client.disconnect(source, port)
        for source, rec in zip(outs, self.rec, strict=False):
            self.client.connect(source, rec)
        for sig, port in zip(self.sig, ins, strict=False):
            self.client.connect(sig, port)

    def wait_recorded(self, frames: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.recorded < frames:
            if time.monotonic() > deadline:
                raise AssertionError(f"recorded {self.recorded} of {frames} frames in "
                                     f"{timeout} s: is the JACK server running?")
            time.sleep(0.01)


def _number(name: str) -> int:
    """``PortAudio:out_3`` -> 3."""
    return int(name.rsplit("_", 1)[1])


def client_of(probe: Probe, prefix: str, timeout: float = 10.0) -> str:
    """The name of the JACK client whose name starts with ``prefix`` (PortAudio's client is
    ``PortAudio``, or ``PortAudio-01`` beside another), once it has ports."""
    deadline = time.monotonic() + timeout
    while True:
        names = {p.name.split(":", 1)[0] for p in probe.client.get_ports(is_audio=True)}
        found = sorted(n for n in names if n.startswith(prefix))
        if found:
            return found[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"no JACK client {prefix}* among {sorted(names)}")
        time.sleep(0.05)
