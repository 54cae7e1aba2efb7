"""The daemon end to end on a real JACK server (dummy driver, no sound card needed).

``lmdm-bridge serve`` runs as a process playing the tiny bundle through sounddevice on
PortAudio's JACK host API. A JACK client of the test (:class:`~tests.jack_support.Probe`)
records the daemon's output ports and feeds its input ports two test tones. Checked on what
JACK delivered:

* the output is not silent and never clips (the safety limiter ends the post chain), and it is
  the daemon's own ``--record`` output, cycle for cycle and in order;
* a ``/lmdm/prompt`` sent over UDP changes the audio within one block plus the look-ahead: the
  first sample that differs from the same seed played without the change (``serve`` on the file
  back-end) lies after the audio JACK was playing when the message was sent, by at most the
  bound computed from the block length, the decoder's latency and the blocks kept ahead;
* the tones arrive in the input recording (``--record-input``) on the right channels, and,
  with the daemon in-process, in its capture ring with their timestamps.

The test machine may be busy (it shares two cores with a training job): recorded JACK cycles
are located in the daemon's output by their samples, so the silence an underrun inserts or a
cycle JACK repeats under overload does not shift the timelines against each other.

Skips, saying why, only when jackd or JACK-Client is not installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests import jack_support

if (_why := jack_support.missing()) is not None:
    pytest.skip(_why, allow_module_level=True)
pytest.importorskip("torch")

from lmdm_bridge.audio import AudioPort, OutputFeed, build_chains  # noqa: E402
from lmdm_bridge.daemon.config import AudioSettings, DaemonConfig, OscSettings  # noqa: E402
from lmdm_bridge.manifest import read_manifest  # noqa: E402

from .engine_support import tiny_model_and_bundle  # noqa: E402
from .jack_support import Probe, client_of  # noqa: E402
from .serve_support import EXE, Served  # noqa: E402
from .test_audio import dominant_frequency  # noqa: E402

RATE, PERIOD, BLOCKSIZE = 48000, 256, 256
TONES = (997, 1499)  # Hz on input channels 1 and 2: a swap would show
AMPLITUDE = 0.25
PROMPT, CHANGED = "organ chorale", "distorted breakbeat with sub bass"
CHANGE_AT, TOTAL = 2.5, 5.0  # seconds of recording at the prompt change, in all
CEILING = 10 ** (-0.3 / 20)  # the safety limiter's
# Blocks kept ready ahead of playback: the most the daemon allows, and one onnxruntime thread
# (config `threads`), so that CPU-bound neighbours on a small test machine rarely starve the
# tiny model. The checks below hold with underruns too; they only make the run less musical.
AHEAD = 4
SLACK = 0.1  # s: OSC delivery, the worker's 50 ms poll, PortAudio's and JACK's buffers


@pytest.fixture(scope="module")
def jack():
    with jack_support.jack_server(f"lmdm-serve-{os.getpid()}", RATE, PERIOD) as name:
        yield name


@dataclass
class Take:
    recording: np.ndarray  # (frames, 2): what JACK delivered from the daemon's outputs
    sent: int | None  # recording frame at which the prompt change was sent
    status: dict  # /lmdm/status at the end
    record: Path  # the daemon's --record file
    record_input: Path  # its --record-input file


def play(jack: str, tmp_path: Path, name: str, change: bool) -> Take:
    """One run of the daemon from /lmdm/play on, recorded by the probe for TOTAL seconds."""
    _, bundle = tiny_model_and_bundle()
    record, record_input = tmp_path / f"{name}.wav", tmp_path / f"{name}-input.wav"
    config = tmp_path / f"{name}.toml"
    config.write_text(f"ahead = {AHEAD}\nthreads = 1\n")
    served = Served(bundle, "--config", str(config), "--audio", "device", "--input", "system",
                    "--output", "system", "--samplerate", str(RATE), "--blocksize", str(BLOCKSIZE),
                    "--prompt", PROMPT,
                    "--seed", "7", "--record", str(record), "--record-input", str(record_input),
                    log=tmp_path / f"{name}.log",
                    env={"JACK_DEFAULT_SERVER": jack, "JACK_NO_START_SERVER": "1"})
    try:
        with Probe(jack, seconds=TOTAL + 1, tones=TONES, amplitude=AMPLITUDE) as probe:
            probe.patch(client_of(probe, "PortAudio"))
            time.sleep(0.2)
            probe.armed = True
            served.send("/lmdm/play")
            sent = None
            if change:
                probe.wait_recorded(int(CHANGE_AT * RATE), timeout=30)
                sent = probe.recorded
                served.send("/lmdm/prompt", CHANGED)
            probe.wait_recorded(int(TOTAL * RATE), timeout=30)
            probe.armed = False
            status = served.status()
            recording = probe.recording[:probe.recorded].copy()
        assert served.terminate() == 0, served.log_text()
    finally:
        served.close()
    return Take(recording, sent, status, record, record_input)


def reference(tmp_path: Path, seconds: float) -> np.ndarray:
    """The stream the daemon generates from /lmdm/play on, without the prompt change: the same
    bundle, prompt and seed rendered by ``serve`` on the file back-end at the same rate (its
    ``--record`` does not depend on device timing)."""
    _, bundle = tiny_model_and_bundle()
    path = tmp_path / "reference.wav"
    done = subprocess.run(
        [EXE, "serve", "--bundle", str(bundle), "--audio", "file", "--samplerate", str(RATE),
         "--autoplay", "--duration", str(seconds), "--prompt", PROMPT, "--seed", "7",
         "--record", str(path), "--osc-port", "0"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    return sf.read(str(path), dtype="float32")[0]


def stream_positions(recording: np.ndarray, stream: np.ndarray, period: int) -> np.ndarray:
    """Where each ``period``-frame chunk of ``recording`` (JACK cycles, as the probe records
    them) occurs in ``stream``, sample for sample: its start index there, or -1 for a chunk that
    is silent or altered (an underrun's fade, a cycle JACK lost to an overloaded machine).

    Matching on exact samples (JACK moves float32 unchanged) makes the map immune to the gaps
    and repeated cycles a busy machine inserts: the positions stay true where a plain offset
    between the two timelines would drift."""
    positions = np.full(len(recording) // period, -1, np.int64)
    first_channel = stream[:, 0]
    for n in range(len(positions)):
        chunk = recording[n * period:(n + 1) * period]
        loud = np.flatnonzero(chunk[:, 0])
        if not len(loud):
            continue
        i = loud[0]
        for candidate in np.flatnonzero(first_channel == chunk[i, 0]) - i:
            if 0 <= candidate <= len(stream) - period and np.array_equal(
                    stream[candidate:candidate + period], chunk):
                positions[n] = candidate
                break
    return positions


def bundle_frames() -> tuple[float, int, int, int]:
    """(model rate, block samples, decoder latency samples, post-chain + resampler latency in
    device frames) of the tiny bundle as the daemon plays it at RATE."""
    from lmdm_bridge.decode import RECEPTIVE_FRAMES

    g = read_manifest(tiny_model_and_bundle()[1], check_files=False).geometry
    block = g.block_frames * g.downsampling_ratio
    decoder = RECEPTIVE_FRAMES * g.downsampling_ratio  # StreamingDecoder's default hold
    feed = OutputFeed(AudioPort(RATE, channels_in=0, channels_out=2), g.sample_rate,
                      g.audio_channels, chain=build_chains(samplerate=RATE).post)
    return g.sample_rate, block, decoder, feed.latency


def test_the_daemon_plays_through_jack_and_a_prompt_change_is_heard_in_time(jack, tmp_path):
    take = play(jack, tmp_path, "changed", change=True)
    recording = take.recording
    assert take.status["error"] == "", take.status
    assert take.status["prompt"] == CHANGED

    # Not silent, no clipping.
    loud = np.flatnonzero(np.abs(recording).max(axis=1) > 0)
    assert len(loud), "the output through JACK is silent"
    music = recording[loud[0]:]
    assert len(music) > 2 * RATE, "less than 2 s of audio after the start"
    windows = np.sqrt((music[:len(music) // 2400 * 2400].reshape(-1, 2400, 2) ** 2).mean(1))
    assert np.mean(windows.max(axis=1) > 1e-3) > 0.8, "the output through JACK is mostly silent"
    assert np.abs(recording).max() <= CEILING + 1e-6, "the output clips"

    # What JACK delivered is the daemon's own output (its --record), in order.
    stream, rate = sf.read(str(take.record), dtype="float32")
    assert rate == RATE and stream.shape[1] == 2
    positions = stream_positions(recording, stream, PERIOD)
    mapped = positions >= 0
    audible = np.abs(recording[:len(positions) * PERIOD]).reshape(len(positions), PERIOD, 2) \
        .max(axis=(1, 2)) > 0
    assert mapped.sum() >= 0.7 * audible.sum(), (
        f"only {mapped.sum()} of {audible.sum()} audible JACK cycles are the daemon's output "
        f"(status {take.status})")
    assert np.all(np.diff(positions[mapped]) >= 0), "the output went back in time"

    # Where the prompt change entered the stream: the first sample that differs from the same
    # seed played without it.
    steady = reference(tmp_path, seconds=len(stream) / RATE + 1)
    n = min(len(stream), len(steady))
    differs = np.flatnonzero(np.abs(stream[:n] - steady[:n]).max(axis=1) > 0)
    assert len(differs), "the prompt change did not change the audio"
    changed = int(differs[0])
    assert positions.max() >= changed + RATE // 2, "the changed audio was not heard through JACK"

    # The stream position JACK was playing when the message left: the last cycle recorded
    # before it that is the daemon's output (later if the message fell into a gap).
    cycle = take.sent // PERIOD
    before = np.flatnonzero(mapped[:cycle + 1])
    assert len(before), "nothing of the daemon's output was recorded before the change"
    heard = positions[before[-1]] + min(take.sent - before[-1] * PERIOD, PERIOD)

    # Audio already on its way when the message arrived: the block being generated and the
    # `ahead` blocks queued before it (the worker tops the queue up below `ahead` blocks), the
    # decoder's held frames, the post chain's and resampler's look-ahead, and scheduling slack.
    # Counted in stream samples: silence an overloaded machine inserts is not audio.
    model_rate, block, decoder, feed = bundle_frames()
    bound = int(((1 + AHEAD) * block + decoder) * RATE / model_rate) + feed + int(SLACK * RATE)
    assert heard < changed <= heard + bound, (
        f"the change entered the stream {(changed - heard) / RATE:+.3f} s after the audio "
        f"playing when it was sent; allowed 0..{bound / RATE:.3f} s")

    # The input tones arrived in the input recording, each on its own channel.
    captured, rate = sf.read(str(take.record_input), dtype="float32")
    assert rate == RATE and captured.shape[1] == 2
    loud = np.flatnonzero(np.abs(captured[:, 0]) > AMPLITUDE / 2)
    assert len(loud) > RATE, "the input test tone is missing from --record-input"
    assert_tones(captured[loud[0]:loud[-1]])


def assert_tones(captured: np.ndarray) -> None:
    """Each channel of ``captured`` ``(frames, 2)`` carries its test tone at the amplitude
    sent, in most quarter-second windows (a cycle lost to an overloaded machine glitches one
    window, not the routing)."""
    size = RATE // 4
    windows = [captured[i:i + size] for i in range(0, len(captured) - size + 1, size)]
    assert len(windows) >= 2, f"only {len(captured)} frames of input"
    for channel, tone in enumerate(TONES):
        good = sum(abs(dominant_frequency(w[:, channel], RATE) - tone) < 1.0
                   and abs(np.sqrt(np.mean(w[:, channel] ** 2)) / (AMPLITUDE / np.sqrt(2)) - 1)
                   < 0.05 for w in windows)
        assert good >= 0.6 * len(windows), (
            f"input channel {channel + 1}: {tone} Hz at {AMPLITUDE} in {good} of "
            f"{len(windows)} windows")


@pytest.fixture
def portaudio_on(jack):
    """PortAudio in this process, re-initialised to see the test's JACK server; it lets go of
    the server before the server stops (PortAudio's JACK host API aborts the interpreter at
    exit otherwise: pa_jack.c Terminate assertion)."""
    from lmdm_bridge.audio.devices import rescan, sounddevice

    keys = ("JACK_DEFAULT_SERVER", "JACK_NO_START_SERVER")
    saved = {key: os.environ.get(key) for key in keys}
    os.environ.update(JACK_DEFAULT_SERVER=jack, JACK_NO_START_SERVER="1")
    rescan()
    try:
        yield jack
    finally:
        if "sounddevice" in sys.modules:
            sounddevice()._terminate()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if "sounddevice" in sys.modules:
            sounddevice()._initialize()


def test_the_input_arrives_in_the_daemons_capture_ring_with_timestamps(portaudio_on, tmp_path):
    from lmdm_bridge.daemon.daemon import Daemon

    config = DaemonConfig(prompt=PROMPT, audio=AudioSettings(
        backend="device", input="system", output="system", samplerate=RATE,
        blocksize=BLOCKSIZE), osc=OscSettings(port=0))
    daemon = Daemon(config, tiny_model_and_bundle()[1])
    worker = threading.Thread(target=daemon.run, name="daemon")
    capture = daemon.backend.port.capture
    with Probe(portaudio_on, seconds=0.1, tones=TONES, amplitude=AMPLITUDE) as probe:
        worker.start()
        try:
            probe.patch(client_of(probe, "PortAudio"))
            time.sleep(0.3)
            begin = capture.end
            time.sleep(1.0)
            end = capture.end
        finally:
            daemon.stop()
            worker.join(timeout=30)
    assert not worker.is_alive()
    assert end - begin == pytest.approx(RATE, rel=0.2), "the ring did not fill in real time"
    window = np.zeros((3 * RATE // 4, 2), np.float32)
    assert capture.read(end - len(window), window), "the ring lost the last 0.75 s"
    assert_tones(window)
    # Timestamps: stream time advances with the sample index at the device rate, period by
    # period. Not over the whole second: a period the device drops under load (an xrun on a
    # busy machine) makes stream time jump ahead of the index, and PortAudio's JACK host API
    # stamps each callback with a clock read that jitters when the callback runs late.
    edges = range(begin, end - PERIOD, PERIOD)
    steps = np.diff([capture.time_at(index) for index in edges])
    assert len(steps) > 100
    assert np.median(steps) == pytest.approx(PERIOD / RATE, rel=0.03)
    assert np.mean(np.abs(steps - PERIOD / RATE) < 0.25 * PERIOD / RATE) >= 0.8, (
        "stream time does not follow the sample index")
