"""Property-based fuzzing of a running daemon over real UDP.

``lmdm-bridge serve`` plays the tiny bundle on the null back-end while hypothesis sends it
datagrams: messages to table and made-up addresses with values of every OSC type, messages
with arbitrary type tags over arbitrary payloads, truncated and bit-flipped messages, bundles,
and raw bytes. Valid messages among them reach the generation worker (random prompts, steps,
guidance, seeds, ejects, effect values), so the engine is fuzzed too, not just the parser.

Afterwards: the process is alive and answers, no handler or block crashed (no traceback in its
log, no "internal error" reply, no failed block), bad but parseable messages were answered with
``/lmdm/error`` (rate-limited: some of them, and the counters account for all), and the block
counter goes on increasing.
"""

from __future__ import annotations

import struct
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pythonosc.osc_message_builder import OscMessageBuilder

from lmdm_bridge.osc import build_table

pytest.importorskip("torch")

from .engine_support import tiny_model_and_bundle  # noqa: E402
from .serve_support import Served  # noqa: E402

FX = ("/lmdm/fx/post/reverb/room_size", "/lmdm/fx/post/reverb/wet_level",
      "/lmdm/fx/post/gain/gain_db")
ADDRESSES = sorted({row.address for row in build_table().rows} | set(FX))


def _pad(data: bytes) -> bytes:
    return data + b"\x00" * (4 - len(data) % 4)


def _typed(address: str, args: list) -> bytes:
    builder = OscMessageBuilder(address)
    for tag, value in args:
        builder.add_arg(value if tag not in "TF" else tag == "T", tag)
    return builder.build().dgram


_ADDRESS = st.one_of(
    st.sampled_from(ADDRESSES),
    st.builds(lambda a, tail: a + tail, st.sampled_from(ADDRESSES),
              st.text(alphabet="/abc*?[]{}#, ", max_size=6)),
    st.text(max_size=30).filter(lambda s: "\x00" not in s).map(lambda s: "/" + s),
)
_ARG = st.one_of(
    st.tuples(st.just("i"), st.integers(-2**31, 2**31 - 1)),
    st.tuples(st.just("h"), st.integers(-2**63, 2**63 - 1)),
    st.tuples(st.just("f"), st.floats(width=32)),
    st.tuples(st.just("d"), st.floats()),
    st.tuples(st.just("s"), st.text(max_size=40).filter(lambda s: "\x00" not in s)),
    st.tuples(st.just("b"), st.binary(min_size=1, max_size=16)),
    st.tuples(st.sampled_from("TFN"), st.none()),
)
_MESSAGE = st.builds(_typed, _ADDRESS, st.lists(_ARG, max_size=6))
# Any type tags over any payload: unknown tags, arrays ([ ]), payloads too short or too long.
_RAW_TAGS = st.builds(
    lambda address, tags, payload: _pad(address.encode()) + _pad(b"," + tags.encode())
    + payload,
    st.sampled_from(ADDRESSES), st.text(alphabet="ifsbhdtcrmTFNI[]xyz", max_size=8),
    st.binary(max_size=48))
_DATAGRAM = st.one_of(
    _MESSAGE,
    _RAW_TAGS,
    st.binary(max_size=200),
    st.builds(lambda d, cut: d[:cut], _MESSAGE, st.integers(0, 80)),
    st.builds(lambda d, i, b: d[:i % len(d)] + bytes([b]) + d[i % len(d) + 1:], _MESSAGE,
              st.integers(0, 400), st.integers(0, 255)),
    st.builds(lambda items, lie: b"#bundle\x00" + bytes(8) + b"".join(
        struct.pack(">i", len(d) + lie) + d for d in items),
        st.lists(st.one_of(_MESSAGE, _RAW_TAGS), max_size=3), st.sampled_from((0, 0, 4, -4))),
)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    _, bundle = tiny_model_and_bundle()
    folder = tmp_path_factory.mktemp("fuzz")
    config = folder / "lmdm.toml"
    config.write_text('threads = 1\n\n[audio]\nbackend = "null"\n\n[[fx.post]]\nplugin = '
                      '"reverb"\n\n[[fx.post]]\nplugin = "gain"\n')
    served = Served(bundle, "--config", str(config), "--autoplay", "--prompt", "organ",
                    "--models-dir", str(folder / "models"), log=folder / "serve.log")
    yield served
    served.close()


def test_fuzzed_datagrams_never_stop_the_daemon(served):
    before = served.wait_for(lambda s: s["blocks"] >= 2, what="the first blocks")
    sent = 0
    errors: list = []

    @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(_DATAGRAM, min_size=1, max_size=4))
    def run(datagrams):
        nonlocal sent
        for data in datagrams:
            served.send_raw(data)
        sent += len(datagrams)
        errors.extend(m for m in served.drain() if m.address == "/lmdm/error")
        assert served.proc.poll() is None, f"the daemon died:\n{served.log_text()}"

    run()
    time.sleep(0.5)
    errors.extend(m for m in served.drain() if m.address == "/lmdm/error")

    # Up and answering; every datagram accounted for; errors answered, within the rate limit.
    status = served.status()
    assert status["received"] - before["received"] >= sent  # loopback UDP loses nothing here
    handled = sum(status[k] - before[k] for k in ("applied", "errors", "dropped"))
    assert handled > 0 and status["errors"] > before["errors"], status
    assert errors, "no /lmdm/error reply to any bad message"
    assert all(len(m.params) == 2 and all(isinstance(p, str) for p in m.params)
               for m in errors), "an /lmdm/error reply is not (address, reason)"
    assert not [m for m in errors if "internal error" in m.params[1]], \
        f"a handler crashed:\n{served.log_text()}"

    # A bad but parseable message after the burst (the rate limit has refilled) is answered.
    time.sleep(1.2)
    served.drain()
    served.send("/lmdm/cfg", "loud")
    assert served.receive("/lmdm/error").params[0] == "/lmdm/cfg"

    # Still making music: back to playing at the bundle's speed, the block counter goes on.
    served.send("/lmdm/steps", 8)
    served.send("/lmdm/cfg", 1.0)
    served.send("/lmdm/play")
    blocks = served.status()["blocks"]
    status = served.wait_for(lambda s: s["blocks"] >= blocks + 4 and s["state"] == "playing",
                             timeout=120, what="blocks after the fuzzing")
    assert "generation failed" not in status["error"], status["error"]
    assert "Traceback" not in served.log_text(), served.log_text()
    assert status["blocks"] > before["blocks"]
