"""The daemon's model: warmed up before it reports ready, switched by name from the models
folder (``/lmdm/model NAME``) while the music goes on, never from an arbitrary path."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from lmdm_bridge.daemon.config import AudioSettings, DaemonConfig, OscSettings
from lmdm_bridge.engine import METHODS, Engine

pytest.importorskip("torch")

from .engine_support import tiny_model_and_bundle  # noqa: E402
from .serve_support import Served  # noqa: E402

PROMPT = "organ chorale"


def test_the_engine_is_warmed_up_before_the_daemon_is_ready_and_the_stream_is_unchanged():
    from lmdm_bridge.daemon.daemon import Daemon
    from lmdm_bridge.decode import StreamingDecoder

    _, bundle = tiny_model_and_bundle()
    config = DaemonConfig(prompt=PROMPT, seed=3, audio=AudioSettings(backend="null"),
                          osc=OscSettings(port=0))
    daemon = Daemon(config, bundle)
    try:
        # Constructed = ready (the OSC port is bound last): every graph has run once already.
        stats = daemon.bundle.stats
        for role in (*METHODS[daemon.engine.method], "vae_decoder"):
            assert stats[role].calls > 0, f"{role} was not warmed up"
        assert daemon.model.warmup_seconds > 0
        assert daemon.status["model"] == bundle.name
        # The warm-up left no trace in the stream: the same blocks and audio as a fresh engine.
        fresh = Engine(bundle, seed=3)
        fresh.set_prompt(PROMPT)
        fresh_decoder = StreamingDecoder(fresh.bundle)
        for _ in range(3):
            want = fresh.next_block()
            got = daemon.engine.next_block()
            np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(daemon.decoder.push(got), fresh_decoder.push(want))
    finally:
        daemon.close()


@pytest.fixture
def models(tmp_path):
    """A models folder with two copies of the tiny bundle and one broken bundle."""
    _, bundle = tiny_model_and_bundle()
    folder = tmp_path / "models"
    for name in ("alpha", "beta"):
        shutil.copytree(bundle, folder / name)
    (folder / "broken").mkdir()
    (folder / "broken" / "manifest.json").write_text("{ not json")
    (tmp_path / "outside").mkdir()
    shutil.copytree(bundle, tmp_path / "outside" / "gamma")
    return folder


def test_models_switch_by_name_from_the_models_folder_only(models, tmp_path):
    served = Served(models / "alpha", "--audio", "null", "--autoplay", "--models-dir",
                    str(models), "--prompt", PROMPT, log=tmp_path / "serve.log")
    try:
        status = served.wait_for(lambda s: s["blocks"] >= 4, what="4 blocks")
        assert status["model"] == "alpha" and status["state"] == "playing"

        served.send("/lmdm/models")
        assert sorted(served.receive("/lmdm/models").params) == ["alpha", "beta", "broken"]

        served.send("/lmdm/model", "beta")
        status = served.wait_for(lambda s: s["model"] == "beta", what="the switch to beta")
        blocks = status["blocks"]
        status = served.wait_for(lambda s: s["blocks"] >= blocks + 4 and s["state"] == "playing",
                                 what="blocks from beta")
        assert status["prompt"] == PROMPT and status["error"] == ""

        # Paths never reach the loader: not outside, not absolute, not a name that is absent.
        outside = tmp_path / "outside" / "gamma"
        for name, reason in (("../outside/gamma", "not a model name"),
                             (str(outside), "not a model name"),
                             ("gamma", "no bundle 'gamma' in the models folder")):
            served.drain()
            served.send("/lmdm/model", name)
            error = served.receive("/lmdm/error")
            assert error.params[0] == "/lmdm/model" and reason in error.params[1], error.params

        # A bundle that does not load is reported; the playing model goes on.
        served.send("/lmdm/model", "broken")
        status = served.wait_for(lambda s: "broken" in s["error"], what="the load error")
        assert status["model"] == "beta"
        blocks = status["blocks"]
        served.wait_for(lambda s: s["blocks"] >= blocks + 4, what="blocks after the failed load")
        assert served.terminate() == 0
    finally:
        served.close()


def test_a_failed_decode_is_reported_and_the_daemon_plays_on():
    """The decode stage's thread raises for one block: the worker reports it in the status and
    keeps generating and queueing audio (the block is lost, the daemon is not)."""
    import threading
    import time

    from lmdm_bridge.daemon.daemon import Daemon

    _, bundle = tiny_model_and_bundle()
    config = DaemonConfig(prompt=PROMPT, seed=3, autoplay=True,
                          audio=AudioSettings(backend="null"), osc=OscSettings(port=0))
    daemon = Daemon(config, bundle)
    decoder = daemon.stage.decoder
    push, calls = decoder.push, []

    def flaky_push(latents):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("simulated decoder fault")
        return push(latents)

    decoder.push = flaky_push
    worker = threading.Thread(target=daemon.run)
    worker.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(calls) < 6:
            time.sleep(0.05)
        assert len(calls) >= 6, "the daemon stopped decoding after the fault"
        # collected by the loop ("decoding failed") or by the next submit ("generation failed")
        assert "failed: simulated decoder fault" in daemon.counts.last_error
        assert worker.is_alive()
    finally:
        daemon.stop()
        worker.join(timeout=30)
    assert not worker.is_alive()
