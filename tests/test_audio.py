"""Audio I/O without a sound card: rings, resampling, effect chains, the callback's fades,
the null and file back-ends, recording under signals, device lookup.

The real-device path (sounddevice on a JACK server) is in ``test_audio_jack.py``.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile
from hypothesis import given, settings
from hypothesis import strategies as st

from lmdm_bridge.audio import (
    AudioError,
    AudioPort,
    CaptureReader,
    CaptureRecorder,
    CaptureRing,
    DeviceInfo,
    InputTap,
    OutputFeed,
    RingBuffer,
    SafetyLimiter,
    StreamResampler,
    WavRecorder,
    build_chain,
    build_chains,
    create_backend,
    find_device,
    format_devices,
    is_loopback,
    parse_channels,
)
from lmdm_bridge.audio.limiter import sliding_min
from lmdm_bridge.osc import build_table

ROOT = Path(__file__).resolve().parents[1]


def dominant_frequency(audio: np.ndarray, samplerate: float) -> float:
    """Frequency (Hz) of the largest FFT bin of a 1-D signal, refined by parabolic
    interpolation (Hann window): accurate to a small fraction of a bin for a pure tone."""
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    k = int(np.argmax(spectrum[1:-1])) + 1
    a, b, c = np.log(spectrum[k - 1:k + 2] + 1e-30)
    offset = 0.5 * (a - c) / (a - 2 * b + c)
    return (k + offset) * samplerate / len(audio)


def sine(freq: float, samplerate: float, frames: int, amplitude: float = 0.5,
         channels: int = 1) -> np.ndarray:
    t = np.arange(frames) / samplerate
    return np.repeat((amplitude * np.sin(2 * np.pi * freq * t))[None], channels, axis=0) \
        .astype(np.float32)


# -- ring buffers -------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(capacity=st.integers(1, 48), channels=st.integers(1, 3),
       ops=st.lists(st.tuples(st.sampled_from("wr"), st.integers(0, 64)), max_size=60))
def test_ring_preserves_order_and_never_over_or_underflows(capacity, channels, ops):
    ring = RingBuffer(capacity, channels)
    next_value, expected = 0, 0  # next value to write; next value a read must return
    for op, n in ops:
        before = ring.available
        if op == "w":
            data = np.arange(next_value, next_value + n, dtype=np.float32)[:, None] \
                .repeat(channels, axis=1)
            written = ring.write(data)
            assert written == min(n, capacity - before)
            next_value += written
        else:
            out = np.full((n, channels), -1.0, np.float32)
            got = ring.read(out)
            assert got == min(n, before)
            np.testing.assert_array_equal(out[:got, 0], np.arange(expected, expected + got))
            assert (out[got:] == -1).all()  # the rest of the caller's array is untouched
            expected += got
        assert 0 <= ring.available <= capacity
        assert ring.available + ring.free == capacity
        assert ring.available == next_value - expected


def test_ring_with_one_writer_and_one_reader_thread():
    ring, total = RingBuffer(1000, 2), 100_000
    received = np.zeros(total, np.float32)

    def writer():
        rng, sent = np.random.default_rng(1), 0
        while sent < total:
            n = min(int(rng.integers(1, 700)), total - sent)
            block = np.arange(sent, sent + n, dtype=np.float32)[:, None].repeat(2, axis=1)
            done = 0
            while done < n:
                moved = ring.write(block[done:])
                done += moved
                if not moved:
                    time.sleep(0.0002)  # let the reader run instead of spinning on the GIL
            sent += n

    thread = threading.Thread(target=writer)
    thread.start()
    rng, got, out = np.random.default_rng(2), 0, np.zeros((700, 2), np.float32)
    deadline = time.monotonic() + 20
    while got < total and time.monotonic() < deadline:
        n = ring.read(out[:int(rng.integers(1, 700))])
        received[got:got + n] = out[:n, 1]
        got += n
        if not n:
            time.sleep(0.0002)
    thread.join()
    assert got == total
    np.testing.assert_array_equal(received, np.arange(total, dtype=np.float32))


def test_capture_ring_reads_by_index_and_time():
    ring = CaptureRing(capacity=100, channels=2, samplerate=10.0)
    for k in range(8):  # chunks of 20 frames, value = absolute index, 2 s each at 10 Hz
        values = np.arange(k * 20, k * 20 + 20, dtype=np.float32)
        ring.write(np.stack([values, -values], axis=1), time=5.0 + 2.0 * k)
    assert (ring.start, ring.end) == (60, 160)
    out = np.zeros((30, 2), np.float32)
    assert ring.read(100, out)
    np.testing.assert_array_equal(out[:, 0], np.arange(100, 130))
    np.testing.assert_array_equal(out[:, 1], -np.arange(100, 130))
    assert not ring.read(50, out)  # overwritten
    assert not ring.read(140, out)  # not written yet
    assert ring.index_at(5.0 + 2.0 * 6 + 0.5) == 125
    assert ring.time_at(125) == pytest.approx(17.5)
    reader = CaptureReader(ring, start=40)
    assert reader.read(out) == 30 and reader.lost == 20  # 40..59 were gone
    np.testing.assert_array_equal(out[:, 0], np.arange(60, 90))


# -- resampling ---------------------------------------------------------------------------------


@pytest.mark.parametrize("source, target", [(22050, 48000), (44100, 48000), (48000, 44100),
                                            (44100, 88200), (96000, 44100), (48000, 48000)])
def test_streaming_resampler_equals_one_shot_and_keeps_the_frequency(source, target):
    audio = sine(1000.0, source, source // 2, channels=2)
    whole = StreamResampler(source, target, 2)
    expected = np.concatenate([whole.process(audio), whole.flush()], axis=1)
    streaming, rng, parts, i = StreamResampler(source, target, 2), np.random.default_rng(0), [], 0
    while i < audio.shape[1]:
        n = int(rng.integers(64, 4097))
        parts.append(streaming.process(audio[:, i:i + n]))
        i += n
    parts.append(streaming.flush())
    chunked = np.concatenate(parts, axis=1)
    np.testing.assert_array_equal(chunked, expected)
    assert abs(chunked.shape[1] - audio.shape[1] * target / source) <= 1
    middle = chunked[0, target // 20:-target // 20]  # away from the filter's start and end
    assert dominant_frequency(middle, target) == pytest.approx(1000.0, abs=0.5)
    assert np.sqrt(np.mean(middle ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)


# -- effect chains ------------------------------------------------------------------------------


def test_chains_from_config_describe_every_numeric_parameter():
    chains = build_chains(
        pre=[{"plugin": "highpass", "cutoff_frequency_hz": 80}],
        post=[{"plugin": "reverb", "room_size": 0.3, "name": "room"},
              {"plugin": "LadderFilter", "mode": "HPF24", "cutoff_hz": 300},
              {"plugin": "gain"}, {"plugin": "gain", "gain_db": -3}],
        samplerate=48000)
    plugins = chains.describe()
    assert [(p.chain, p.name) for p in plugins] == [
        ("pre", "highpass"), ("post", "room"), ("post", "ladder"), ("post", "gain"),
        ("post", "gain"), ("post", "safety")]
    assert plugins[0].params["cutoff_frequency_hz"] == (20.0, 20000.0, 80.0)
    assert plugins[1].params["room_size"][2] == pytest.approx(0.3)
    assert set(plugins[1].params) == {"room_size", "damping", "wet_level", "dry_level", "width",
                                      "freeze_mode"}
    assert "mode" not in plugins[2].params  # a choice, not an OSC number
    assert plugins[-1].params == {"ceiling_db": (-24.0, 0.0, -0.3)}
    table = build_table(plugins)  # the OSC table accepts the description as is
    assert table.get("/lmdm/fx/post/room/room_size") is not None
    assert table.get("/lmdm/fx/post/gain-2/gain_db") is not None


@pytest.mark.parametrize("entry, message", [
    ({"plugin": "fuzzbox"}, "unknown plugin 'fuzzbox'"),
    ({"plugin": "reverbb"}, "did you mean reverb"),
    ({"plugin": "reverb", "size": 0.5}, "unknown parameter 'size'"),
    ({"plugin": "reverb", "room_size": 1.5}, "room_size = 1.5 is out of range [0, 1]"),
    ({"plugin": "delay", "mix": "lots"}, "mix must be a number"),
    ({"plugin": "ladder", "mode": "notch"}, "mode must be one of"),
    ({"plugin": "vst3", "path": "/nonexistent/Fx.vst3"}, "no plugin at /nonexistent/Fx.vst3"),
    ({"plugin": "vst3"}, "needs a 'path'"),
    ({"room_size": 0.5}, "'plugin' key"),
])
def test_bad_effect_config_is_a_named_error(entry, message):
    with pytest.raises(ValueError, match="fx.post\\[0\\]") as info:
        build_chain("post", [entry], 48000)
    assert message in str(info.value)


def test_frequency_ranges_stay_below_nyquist():
    chain = build_chain("post", [{"plugin": "lowpass"}], 22050)
    low, high = chain.effects[0].ranges["cutoff_frequency_hz"]
    assert high < 22050 / 2
    with pytest.raises(ValueError, match="cutoff_frequency_hz"):
        build_chain("post", [{"plugin": "lowpass", "cutoff_frequency_hz": 15000}], 22050)


def test_set_param_is_checked_and_applied_before_the_next_block():
    chains = build_chains(post=[{"plugin": "gain", "gain_db": 0}], samplerate=48000,
                          safety_limiter=False)
    block = np.full((2, 256), 0.25, np.float32)
    thread = threading.Thread(target=chains.set_param, args=("post", 0, "gain_db", -6.0))
    thread.start()
    thread.join()
    assert chains.post.effects[0].value("gain_db") == 0.0  # queued, not applied
    out = chains.post.process(block)
    assert np.abs(out[:, -1]).max() == pytest.approx(0.25 * 10 ** (-6 / 20), rel=1e-3)
    for args, message in [(("post", 3, "gain_db", 0.0), "no such effect"),
                          (("post", 0, "volume", 0.0), "no controllable parameter 'volume'"),
                          (("post", 0, "gain_db", 99.0), "out of range"),
                          (("side", 0, "gain_db", 0.0), "chain must be one of")]:
        with pytest.raises(ValueError, match=message):
            chains.set_param(*args)


def test_chain_streams_with_state_kept_between_blocks():
    config = [{"plugin": "highpass", "cutoff_frequency_hz": 200},
              {"plugin": "delay", "delay_seconds": 0.01, "feedback": 0.3},
              {"plugin": "reverb", "room_size": 0.7}]
    audio = np.random.default_rng(0).standard_normal((2, 24000)).astype(np.float32) * 0.1
    whole = build_chain("post", config, 48000, safety_limiter=True).process(audio)
    chain, parts = build_chain("post", config, 48000, safety_limiter=True), []
    for start in range(0, audio.shape[1], 1000):
        parts.append(chain.process(audio[:, start:start + 1000]))
    np.testing.assert_allclose(np.concatenate(parts, axis=1), whole, atol=1e-5)


def test_safety_limiter_keeps_output_below_zero_dbfs_and_quiet_audio_untouched():
    rng = np.random.default_rng(3)
    loud = rng.standard_normal((2, 48000)).astype(np.float32) * 3.0  # peaks near +20 dBFS
    chain = build_chain("post", [{"plugin": "gain", "gain_db": 12}], 48000,
                        safety_limiter=True)
    out = np.concatenate([chain.process(loud[:, i:i + 4096]) for i in range(0, 48000, 4096)],
                         axis=1)
    ceiling = 10 ** (-0.3 / 20)
    assert np.abs(out).max() <= ceiling
    assert np.abs(out).max() > 0.9 * ceiling  # limited, not muted
    quiet = rng.standard_normal((2, 9600)).astype(np.float32) * 0.1
    limiter = SafetyLimiter(48000)
    delayed = limiter(quiet)
    np.testing.assert_array_equal(delayed[:, limiter.latency:], quiet[:, :-limiter.latency])


def test_sliding_min_matches_the_definition():
    values = np.random.default_rng(4).random(97)
    for window in (1, 2, 3, 5, 8, 13, 64, 97):
        expected = [values[t:t + window].min() for t in range(len(values) - window + 1)]
        np.testing.assert_array_equal(sliding_min(values, window), expected)


# -- the callback: fades, gain, channels, no allocation -----------------------------------------


def play(port: AudioPort, blocks: int, blocksize: int = 128, channels: int = 2) -> np.ndarray:
    out = np.zeros((blocksize, channels), np.float32)
    played = []
    for _ in range(blocks):
        port.process_output(out)
        played.append(out.copy())
    return np.concatenate(played) if played else out[:0].copy()


def test_underrun_fades_out_and_back_in_without_steps():
    port = AudioPort(48000, channels_in=0, channels_out=2, fade_ms=2.0)  # 96-frame ramp
    level = 0.5
    port.output.write(np.full((1000, 2), level, np.float32))
    first = play(port, 12)  # 1536 frames: runs dry after 1000
    assert port.underruns == 1
    port.output.write(np.full((700, 2), level, np.float32))
    second = play(port, 8)
    out = np.concatenate([first, second])[:, 0]
    max_step = level / port.fade
    assert np.abs(np.diff(out)).max() <= max_step * 1.001
    assert np.abs(np.diff(np.concatenate([[0.0], out]))).max() <= max_step * 1.001  # start too
    assert out.max() == pytest.approx(level)  # full level between the ramps
    assert (out[1000:1536] == 0).all()  # silence while dry, no stale audio
    assert port.underruns == 2  # the second stretch ran dry as well
    port.end_of_stream()
    port.output.write(np.full((300, 2), level, np.float32))
    port.end_of_stream(True)  # the producer wrote, then announced the end
    play(port, 4)
    assert port.underruns == 2  # an announced end is no underrun


@pytest.mark.parametrize("played_blocks", [0, 2, 7])
def test_cut_fades_out_drops_the_queue_and_plays_what_comes_next(played_blocks):
    port = AudioPort(48000, channels_in=0, channels_out=1, fade_ms=4.0)  # 192-frame ramp
    port.output.write(np.full((5000, 1), 0.5, np.float32))
    out = [play(port, played_blocks, channels=1)]
    port.cut()
    port.output.write(np.full((2000, 1), -0.25, np.float32))  # new material, after the cut
    out.append(play(port, 30, channels=1))
    out = np.concatenate(out)[:, 0]
    assert np.abs(np.diff(np.concatenate([[0.0], out]))).max() <= 0.5 / port.fade * 1.001
    old = np.flatnonzero(out > 0)
    assert len(old) <= played_blocks * 128 + port.fade  # the old queue stopped within a fade
    assert (out == -0.25).sum() > 1000  # the new audio plays in full between its ramps
    assert port.underruns == 1  # only the final run-dry of the new audio, not the cut
    assert port.output.available == 0


def test_gain_changes_ramp():
    port = AudioPort(48000, channels_in=0, channels_out=1, fade_ms=1.0, gain_ramp_ms=5.0)
    port.output.write(np.full((6000, 1), 0.8, np.float32))
    out = play(port, 10, channels=1)
    port.set_gain_db(-12.0)
    out = np.concatenate([out, play(port, 20, channels=1)])[:, 0]
    assert np.abs(np.diff(out)).max() <= 0.8 / port.fade * 1.001
    assert out[-1] == pytest.approx(0.8 * 10 ** (-12 / 20), rel=1e-4)


def test_channel_selection_maps_ring_channels_to_device_columns():
    port = AudioPort(48000, channels_in=2, channels_out=2, in_columns=(3, 4),
                     out_columns=(2, 4), device_in=4, device_out=4, fade_ms=0.01)
    port.output.write(np.tile(np.array([[0.1, 0.2]], np.float32), (256, 1)))
    out = np.full((128, 4), 9.0, np.float32)
    port.process_output(out)
    port.process_output(out)
    np.testing.assert_allclose(out[-1], [0.0, 0.1, 0.0, 0.2])
    indata = np.tile(np.arange(4, dtype=np.float32), (64, 1))
    port.process_input(indata, time=1.0)
    captured = np.zeros((64, 2), np.float32)
    assert port.capture.read(0, captured)
    np.testing.assert_array_equal(captured[0], [2.0, 3.0])
    with pytest.raises(ValueError):
        AudioPort(48000, channels_in=0, channels_out=2, out_columns=(2, 3), device_out=2)


def test_callback_does_not_allocate_audio_buffers():
    blocksize, channels = 4096, 2
    port = AudioPort(48000, channels_in=channels, channels_out=channels,
                     max_blocksize=blocksize, monitor_seconds=1.0)
    port.set_gain_db(-3.0)
    outdata = np.zeros((blocksize, channels), np.float32)
    indata = np.zeros((blocksize, channels), np.float32)
    audio = np.full((blocksize * 3, channels), 0.1, np.float32)
    port.output.write(audio)
    port.process_output(outdata)  # warm up the code paths once
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(4):  # plays audio, then runs dry: the fade paths too
            port.process_input(indata, 0.0)
            port.process_output(outdata)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak < blocksize * channels * 4 // 4  # far below one block (32 KiB)


# -- back-ends ----------------------------------------------------------------------------------


def test_null_backend_keeps_time():
    backend = create_backend("null", samplerate=48000, blocksize=480, channels_in=1,
                             channels_out=2)
    backend.start()
    started = time.perf_counter()
    time.sleep(1.0)
    elapsed = time.perf_counter() - started
    played = backend.port.frames_played / 48000
    backend.stop()
    assert played <= elapsed + 2 * 480 / 48000  # never ahead of the wall clock
    assert played >= elapsed - 0.15 - backend.xruns * 0.01  # loose: 2 shared cores
    assert backend.port.frames_captured == backend.port.frames_played


def test_file_backend_renders_a_feed_offline_and_captures_its_input(tmp_path):
    rate, model_rate = 48000, 22050
    input_audio = sine(330.0, rate, rate // 2, amplitude=0.3, channels=2)
    path = tmp_path / "in.wav"
    soundfile.write(path, input_audio.T, rate, subtype="FLOAT")
    backend = create_backend("file", samplerate=rate, blocksize=512, input_audio=path,
                             capture_seconds=2.0)
    chains = build_chains(samplerate=rate)
    feed = OutputFeed(backend.port, model_rate, 1, chain=chains.post)
    tap = InputTap(backend.port.capture, model_rate, 1, start=0)
    backend.start()
    generated = sine(440.0, model_rate, model_rate, amplitude=0.5)
    for start in range(0, model_rate, 5000):
        feed.push(generated[:, start:start + 5000])
    feed.finish()
    assert backend.wait(timeout=20)
    backend.stop()
    out = backend.output_audio()
    assert out.shape[0] == 2
    assert abs(out.shape[1] - rate) <= 2 * 512  # all of it, to the last block
    assert backend.port.underruns == 0
    assert dominant_frequency(out[0, 4800:-4800], rate) == pytest.approx(440.0, abs=0.5)
    np.testing.assert_array_equal(out[0], out[1])  # mono model copied to both channels
    captured = np.zeros((rate // 2, 2), np.float32)
    assert backend.port.capture.read(0, captured)
    np.testing.assert_allclose(captured.T, input_audio, atol=1e-6)
    at_model_rate = tap.read()
    assert at_model_rate.shape[0] == 1
    assert dominant_frequency(at_model_rate[0, 2000:-2000], model_rate) == \
        pytest.approx(330.0, abs=0.5)


def test_output_feed_zeroes_non_finite_samples():
    port = AudioPort(44100, channels_in=0, channels_out=1)
    feed = OutputFeed(port, 44100, 1)
    block = np.full((1, 100), 0.1, np.float32)
    block[0, 10] = np.nan
    block[0, 20] = np.inf
    feed.push(block)
    out = np.zeros((100, 1), np.float32)
    assert port.output.read(out) == 100
    assert np.isfinite(out).all() and out[10, 0] == 0 and feed.nonfinite == 1


def test_backend_options_are_checked():
    with pytest.raises(ValueError, match="device back-end only"):
        create_backend("null", samplerate=48000, blocksize=256, input="BlackHole")
    with pytest.raises(ValueError, match="must be one of"):
        create_backend("alsa", samplerate=48000, blocksize=256)
    assert parse_channels("3,4") == (3, 4)
    for bad in ("0,1", "a,b", "1,1", ""):
        with pytest.raises(ValueError, match="1-based"):
            parse_channels(bad)


# -- recording ----------------------------------------------------------------------------------

RECORD_SCRIPT = """
import signal, sys, time
import numpy as np
from lmdm_bridge.audio import WavRecorder

if sys.argv[2] == "term":  # what the daemon does on SIGTERM: unwind, closing the recorder
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
with WavRecorder(sys.argv[1], 48000, 2, flush_seconds=0.1) as recorder:
    for k in range(1000):
        recorder.write(np.full((2, 4800), k / 1000, np.float32))
        print(k + 1, flush=True)
        time.sleep(0.02)
"""


@pytest.mark.parametrize("how", ["term", "kill"])
def test_recording_survives_the_process_being_stopped(tmp_path, how):
    path = tmp_path / "out.wav"
    proc = subprocess.Popen([sys.executable, "-c", RECORD_SCRIPT, str(path), how],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        for line in proc.stdout:
            if int(line) >= 6:
                break
        if how == "kill":
            time.sleep(0.4)  # a flush (every 0.1 s) has run since block 6 was queued
        written = int(line)
        proc.send_signal(signal.SIGTERM if how == "term" else signal.SIGKILL)
        proc.wait(timeout=10)
        written = max(written, *(int(rest) for rest in proc.stdout.read().split()), 0)
    finally:
        proc.kill()
        proc.stdout.close()
    data, rate = soundfile.read(path, dtype="float32")
    assert rate == 48000 and data.shape[1] == 2
    blocks = data.shape[0] // 4800
    # SIGTERM: every block queued before the signal; SIGKILL: everything up to the last flush.
    assert blocks >= (written if how == "term" else 6)
    assert data.shape[0] == blocks * 4800
    for k in range(blocks):
        np.testing.assert_array_equal(data[k * 4800:(k + 1) * 4800], np.float32(k / 1000))


def test_capture_recorder_writes_the_input(tmp_path):
    ring = CaptureRing(48000, 2, 48000.0)
    audio = sine(220.0, 48000, 24000, channels=2)
    with CaptureRecorder(ring, tmp_path / "in.wav", poll_seconds=0.01) as recorder:
        for start in range(0, 24000, 256):
            ring.write(audio[:, start:start + 256].T, start / 48000)
    data, _ = soundfile.read(tmp_path / "in.wav", dtype="float32")
    np.testing.assert_array_equal(data.T, audio)
    assert recorder.lost == 0
    with WavRecorder(tmp_path / "x.wav", 48000, 1) as rec, pytest.raises(ValueError):
        rec.write(np.zeros((2, 10), np.float32))


# -- devices ------------------------------------------------------------------------------------

FAKE = [DeviceInfo(0, "MacBook Pro Speakers", "Core Audio", 0, 2, 48000.0),
        DeviceInfo(1, "BlackHole 2ch", "Core Audio", 2, 2, 48000.0),
        DeviceInfo(2, "BlackHole 16ch", "Core Audio", 16, 16, 48000.0),
        DeviceInfo(3, "MacBook Pro Microphone", "Core Audio", 1, 0, 48000.0),
        DeviceInfo(4, "system", "JACK Audio Connection Kit", 2, 2, 48000.0)]


def test_find_device_by_name_index_and_direction():
    assert find_device("blackhole 16", "input", devices=FAKE).index == 2
    assert find_device("2", "output", devices=FAKE).name == "BlackHole 16ch"  # an index
    assert find_device("system", "input", hostapi="jack", devices=FAKE).index == 4
    assert find_device("microphone", "input", devices=FAKE).index == 3
    with pytest.raises(AudioError, match="several input devices.*BlackHole 2ch.*BlackHole 16ch"):
        find_device("blackhole", "input", devices=FAKE)
    with pytest.raises(AudioError, match="no input device matches 'Speakers'"):
        find_device("Speakers", "input", devices=FAKE)  # output only
    with pytest.raises(AudioError, match="Close matches: #1 'BlackHole 2ch'"):
        find_device("Blakhole 2ch", "output", devices=FAKE)
    with pytest.raises(AudioError, match="no output device #3"):
        find_device(3, "output", devices=FAKE)


def test_device_listing_marks_loopbacks_and_gives_the_platform_hint():
    assert is_loopback("BlackHole 16ch") and is_loopback("CABLE Output (VB-Audio Virtual Cable)")
    assert is_loopback("Monitor of Built-in Audio") and is_loopback("system", "JACK Audio")
    assert not is_loopback("MacBook Pro Speakers", "Core Audio")
    text = format_devices(FAKE, platform="darwin")
    marked = {line.split()[1] for line in text.splitlines() if re.match(r"\*\s+\d", line)}
    assert marked == {"1", "2", "4"}
    assert "brew install blackhole" in text.split("\n\n")[-1]
    assert "VB-Cable" in format_devices(FAKE, platform="win32")
    assert "JACK" in format_devices([], platform="linux")


def test_devices_command_prints_the_listing(capsys):
    from lmdm_bridge.commands import devices

    parser = argparse.ArgumentParser()
    devices.add_arguments(parser)
    assert devices.run(parser.parse_args(["--platform", "win32"])) == 0
    assert "VB-Cable" in capsys.readouterr().out
