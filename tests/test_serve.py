"""``lmdm-bridge serve`` end to end on the clocked null back-end: a real process, real UDP
sockets for OSC, SIGTERM for shutdown, the recording read back."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from pythonosc.osc_message import OscMessage
from pythonosc.udp_client import SimpleUDPClient

pytest.importorskip("torch")

from .engine_support import tiny_model_and_bundle  # noqa: E402

EXE = str(Path(sys.executable).with_name("lmdm-bridge"))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _receive(sock: socket.socket, address: str, timeout: float = 10.0) -> OscMessage:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data, _ = sock.recvfrom(65536)
        except TimeoutError:
            break
        message = OscMessage(data)
        if message.address == address:
            return message
    raise AssertionError(f"no {address} reply within {timeout} s")


@pytest.fixture
def daemon(tmp_path):
    _, bundle = tiny_model_and_bundle()
    osc_port, reply_port = _free_port(), _free_port()
    replies = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    replies.bind(("127.0.0.1", reply_port))
    record = tmp_path / "out.wav"
    proc = subprocess.Popen(
        [EXE, "serve", "--bundle", str(bundle), "--audio", "null", "--osc-port", str(osc_port),
         "--reply-port", str(reply_port), "--record", str(record), "--prompt", "organ chorale"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client = SimpleUDPClient("127.0.0.1", osc_port)
    deadline = time.monotonic() + 60
    while True:  # wait until the daemon answers
        client.send_message("/lmdm/ping", [])
        try:
            _receive(replies, "/lmdm/pong", timeout=0.5)
            break
        except AssertionError:
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "the daemon did not come up"
    yield proc, client, replies, record
    if proc.poll() is None:
        proc.kill()
    replies.close()


def _status(client, replies) -> dict:
    client.send_message("/lmdm/status", [])
    args = _receive(replies, "/lmdm/status").params
    return dict(zip(args[::2], args[1::2], strict=True))


def test_play_prompt_status_and_clean_sigterm(daemon):
    proc, client, replies, record = daemon
    status = _status(client, replies)
    assert status["state"] == "stopped"
    for key in ("prompt", "rtf", "blocks", "underruns", "xruns", "latency"):
        assert key in status
    client.send_message("/lmdm/play", [])
    client.send_message("/lmdm/prompt", ["string", "ensemble", "chorale"])  # Pd-style words
    deadline = time.monotonic() + 60
    while _status(client, replies)["blocks"] < 8:
        assert time.monotonic() < deadline, "no blocks generated"
        time.sleep(0.2)
    status = _status(client, replies)
    assert status["state"] == "playing" and status["prompt"] == "string ensemble chorale"
    assert status["latency"] > 0
    client.send_message("/lmdm/cfg", ["not a number"])
    error = _receive(replies, "/lmdm/error")
    assert error.params[0] == "/lmdm/cfg"
    assert _status(client, replies)["state"] == "playing", "bad input stopped the music"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    audio, rate = sf.read(str(record), dtype="float32")
    assert rate == 44100 and audio.shape[1] == 2
    assert len(audio) >= 4 * 4 * 2048, "the recording lacks the blocks played"
    assert np.abs(audio).max() > 1e-3, "the recording is silent"
    assert np.abs(audio).max() <= 1.0
