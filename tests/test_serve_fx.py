"""Effect chains from the TOML config through ``lmdm-bridge serve``: a mistake is a named error
at start (exit code, the entry as the TOML spells it, the fix), and nothing is left half
started; a good chain is controllable over OSC."""

from __future__ import annotations

import socket
import subprocess

import pytest

pytest.importorskip("torch")

from .engine_support import tiny_model_and_bundle  # noqa: E402
from .serve_support import EXE, Served, free_port  # noqa: E402

BAD_CHAINS = [
    ('[[fx.post]]\nplugin = "reverbb"\n',
     ["fx.post[0]", "unknown plugin 'reverbb'", "did you mean reverb?", "vst3/au with a path"]),
    ('[[fx.pre]]\nplugin = "highpass"\n\n[[fx.pre]]\nplugin = "reverb"\nroom_sise = 0.3\n',
     ["fx.pre[1] (reverb)", "unknown parameter 'room_sise'", "did you mean room_size?",
      "known: room_size, damping"]),
]


@pytest.mark.parametrize(("chain", "named"), BAD_CHAINS, ids=["plugin", "parameter"])
def test_an_unknown_plugin_or_parameter_stops_serve_with_a_named_error(tmp_path, chain, named):
    _, bundle = tiny_model_and_bundle()
    config = tmp_path / "lmdm.toml"
    config.write_text(f'prompt = "organ"\n\n[audio]\nbackend = "null"\n\n{chain}')
    record = tmp_path / "take.wav"
    port = free_port()
    done = subprocess.run([EXE, "serve", "--bundle", str(bundle), "--config", str(config),
                           "--osc-port", str(port), "--record", str(record), "--autoplay"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    for text in named:
        assert text in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, "a named error, not a crash"
    # Not half started: the chain is checked before the model loads, the port is bound and the
    # recording is created.
    assert "warmed up" not in done.stderr
    assert not record.exists(), "a failed start left a recording behind"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", port))  # free: the daemon never bound it


def test_a_chain_from_toml_is_played_and_controlled_over_osc(tmp_path):
    _, bundle = tiny_model_and_bundle()
    config = tmp_path / "lmdm.toml"
    config.write_text('[audio]\nbackend = "null"\n\n[[fx.post]]\nplugin = "reverb"\n'
                      'room_size = 0.3\n\n[[fx.post]]\nplugin = "gain"\ngain_db = -6\n')
    served = Served(bundle, "--config", str(config), "--autoplay", log=tmp_path / "serve.log")
    try:
        served.wait_for(lambda s: s["blocks"] >= 2, what="blocks")
        served.send("/lmdm/fx/post/reverb/room_size", 0.8)
        served.send("/lmdm/fx/post/gain/gain_db", 30.0)  # out of its range -60..24
        error = served.receive("/lmdm/error")
        assert error.params[0] == "/lmdm/fx/post/gain/gain_db", error.params
        status = served.status()
        assert status["errors"] == 1 and status["applied"] >= 2, status
        blocks = status["blocks"]
        status = served.wait_for(lambda s: s["blocks"] >= blocks + 2, what="more blocks")
        assert status["error"] == "", "the reverb change failed in the worker"
        assert served.terminate() == 0
    finally:
        served.close()
