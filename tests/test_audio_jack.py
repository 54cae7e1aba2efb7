"""The device back-end on a real JACK server (dummy driver, no sound card needed).

A JACK server of its own (unique name) is started by a fixture; sounddevice plays through
PortAudio's JACK host API while a JACK-Client client records what PortAudio plays and feeds
PortAudio's capture port a test tone. Skips, saying why, when jackd or JACK-Client is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from lmdm_bridge.audio import AudioError, DeviceBackend, OutputFeed, build_chains
from tests.test_audio import dominant_frequency, sine

RATE, PERIOD = 48000, 256

if shutil.which("jackd") is None or shutil.which("jack_lsp") is None:
    pytest.skip("jackd is not installed (Debian: apt-get install jackd2)",
                allow_module_level=True)
jack = pytest.importorskip("jack", reason="JACK-Client is not installed (pip install JACK-Client)")


@pytest.fixture(scope="module")
def jack_server():
    """A JACK server named for this process, with PortAudio re-initialised to see it."""
    from lmdm_bridge.audio.devices import rescan, sounddevice

    name = f"lmdm-test-{os.getpid()}"
    saved = {key: os.environ.get(key) for key in ("JACK_DEFAULT_SERVER", "JACK_NO_START_SERVER")}
    # PortAudio connects to the default server: point it at ours, and never autostart one.
    os.environ.update(JACK_DEFAULT_SERVER=name, JACK_NO_START_SERVER="1")
    proc = subprocess.Popen(["jackd", "-n", name, "-d", "dummy", "-r", str(RATE), "-p",
                             str(PERIOD)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while b"system:" not in subprocess.run(["jack_lsp", "-s", name],
                                               capture_output=True).stdout:
            assert proc.poll() is None and time.monotonic() < deadline, "jackd did not start"
            time.sleep(0.1)
        rescan()
        yield name
    finally:
        if "sounddevice" in sys.modules:
            # PortAudio must let go of the server before it dies, or PortAudio's JACK host API
            # aborts the interpreter at exit (pa_jack.c: Terminate: Assertion 'err == 0').
            sounddevice()._terminate()
        proc.terminate()
        proc.wait(timeout=5)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if "sounddevice" in sys.modules:
            sounddevice()._initialize()  # back to a usable state, without the server


def port_number(name: str) -> int:
    """``PortAudio:out_3`` -> 3 (PortAudio numbers ports on across the streams it opens)."""
    return int(name.rsplit("_", 1)[1])


class Probe:
    """A JACK client: records its input port, plays a 997 Hz tone (amplitude 0.25) on its
    output port. The process callback runs in JACK's thread and only copies."""

    def __init__(self, server: str, seconds: float) -> None:
        self.client = jack.Client("probe", servername=server, no_start_server=True)
        self.rec = self.client.inports.register("rec")
        self.sig = self.client.outports.register("sig")
        self.recording = np.zeros(int(seconds * RATE), np.float32)
        self.recorded = 0
        self.armed = False
        self.phase = 0
        self.tone = 0.25 * np.sin(2 * np.pi * 997.0 * np.arange(RATE) / RATE).astype(np.float32)
        self.client.set_process_callback(self._process)

    def _process(self, frames: int) -> None:
        start = self.phase % (RATE - frames)  # 997 whole cycles per second: seamless wrap
        self.sig.get_array()[:] = self.tone[start:start + frames]
        self.phase += frames
        if self.armed:
            n = min(frames, len(self.recording) - self.recorded)
            self.recording[self.recorded:self.recorded + n] = self.rec.get_array()[:n]
            self.recorded += n


def test_device_backend_plays_and_captures_through_jack(jack_server):
    probe = Probe(jack_server, seconds=3.0)
    probe.client.activate()
    backend = DeviceBackend(RATE, PERIOD, input="system", output="system", hostapi="JACK",
                            output_seconds=4.0, capture_seconds=4.0)
    chains = build_chains(post=[{"plugin": "gain", "gain_db": 6.0}], samplerate=RATE)
    feed = OutputFeed(backend.port, 22050, 1, chain=chains.post)
    try:
        backend.start()
        mine = {probe.rec.name, probe.sig.name}
        ours = [p for p in probe.client.get_ports(is_audio=True)
                if not p.name.startswith("system:") and p.name not in mine]
        outs = sorted((p.name for p in ours if p.is_output), key=port_number)
        ins = sorted((p.name for p in ours if p.is_input), key=port_number)
        assert outs and ins, f"PortAudio's ports not found: {[p.name for p in ours]}"
        probe.client.connect(outs[0], probe.rec.name)
        probe.client.connect(probe.sig.name, ins[0])
        time.sleep(0.1)
        probe.armed = True
        captured_from = backend.port.capture.end
        # A 440 Hz tone at 22.05 kHz mono: resampled to 48 kHz, +6 dB driving it past full
        # scale into the safety limiter.
        feed.push(sine(440.0, 22050, int(1.5 * 22050), amplitude=0.9))
        time.sleep(2.0)
    finally:
        probe.armed = False
        backend.stop()
        probe.client.deactivate()
        probe.client.close()

    recorded = probe.recording[:probe.recorded]
    loud = recorded[np.abs(recorded) > 0.05]
    assert len(loud) > RATE, "the output through JACK is (nearly) silent"
    assert np.abs(recorded).max() <= 10 ** (-0.3 / 20) + 1e-6, "the output clips"
    start = int(np.argmax(np.abs(recorded) > 0.05)) + RATE // 10
    assert dominant_frequency(recorded[start:start + RATE // 2], RATE) == \
        pytest.approx(440.0, abs=1.0)

    end = backend.port.capture.end
    assert end - captured_from > RATE, "the capture ring did not fill"
    captured = np.zeros((RATE // 2, backend.port.channels_in), np.float32)
    assert backend.port.capture.read(end - RATE // 2 - RATE // 4, captured)
    assert dominant_frequency(captured[:, 0], RATE) == pytest.approx(997.0, abs=1.0)
    assert np.sqrt(np.mean(captured[:, 0] ** 2)) == pytest.approx(0.25 / np.sqrt(2), rel=0.05)
    assert backend.port.underruns <= 1  # the tone's end, not announced as an end of stream


def test_input_only_stream_captures(jack_server):
    probe = Probe(jack_server, seconds=0.1)
    probe.client.activate()
    backend = DeviceBackend(RATE, PERIOD, input="system", output=None, hostapi="JACK",
                            in_channels="2", capture_seconds=2.0)
    try:
        backend.start()
        assert backend.channels_in == 1 and backend.channels_out == 0
        # PortAudio numbers its ports on from earlier streams (in_2, in_3 here): take the
        # second of the stream's two.
        names = sorted((p.name for p in probe.client.get_ports(is_audio=True, is_input=True)
                        if not p.name.startswith(("system:", "probe:"))),
                       key=port_number)
        assert len(names) == 2, f"expected PortAudio's two input ports, found {names}"
        port = names[1]
        probe.client.connect(probe.sig.name, port)  # device channel 2
        time.sleep(0.7)
        end = backend.port.capture.end
    finally:
        backend.stop()
        probe.client.deactivate()
        probe.client.close()
    captured = np.zeros((RATE // 4, 1), np.float32)
    assert backend.port.capture.read(end - RATE // 4, captured)
    assert dominant_frequency(captured[:, 0], RATE) == pytest.approx(997.0, abs=2.0)


def test_device_errors_name_the_problem(jack_server):
    with pytest.raises(AudioError, match="no output device matches 'Soundflower'.*system"):
        DeviceBackend(RATE, PERIOD, input=None, output="Soundflower", hostapi="JACK")
    with pytest.raises(AudioError, match="does not accept 44100 Hz"):
        DeviceBackend(44100, PERIOD, input=None, output="system", hostapi="JACK")
    default_rate = DeviceBackend(None, PERIOD, input=None, output="system", hostapi="JACK")
    assert default_rate.samplerate == RATE  # the server's rate
    with pytest.raises(AudioError, match="channels 3,4 do not exist on 'system'"):
        DeviceBackend(RATE, PERIOD, input=None, output="system", hostapi="JACK",
                      out_channels="3,4")
