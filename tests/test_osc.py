"""The OSC control surface over real UDP sockets on 127.0.0.1 (ephemeral ports).

python-osc builds what is sent and parses what comes back, so the server's own parser and
builder are checked against an independent implementation. Ordering: the server handles
datagrams one by one on one thread, so a ``/lmdm/ping`` sent after a message is answered after
that message was handled; :meth:`Client.sync` uses that instead of sleeping.
"""

from __future__ import annotations

import argparse
import math
import socket
import struct
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.udp_client import UDPClient

from lmdm_bridge.osc import (
    ControlQueue,
    Eject,
    OscConfig,
    OscServer,
    Play,
    QueueFull,
    Reseed,
    Reset,
    SetCfg,
    SetFx,
    SetGain,
    SetPrompt,
    SetSteps,
    Stop,
    SwitchModel,
    TableSettings,
    add_arguments,
    build_table,
    config_from_args,
    controls,
    wire,
)
from lmdm_bridge.osc.docs import render
from lmdm_bridge.osc.table import QUERIES, STATUS_KEYS, ArgError, FxPlugin, read_args

CHAINS = (
    ("pre", "gain", {"gain_db": (-24.0, 24.0, 0.0)}),
    ("post", "reverb", {"room_size": (0.0, 1.0, 0.3), "wet_level": (0.0, 1.0, 0.2)}),
    ("post", "gain", {"gain_db": (-24.0, 24.0, 0.0)}),
    FxPlugin("post", "limiter", {"threshold_db": (-24.0, 0.0, -1.0)}),
)
TABLE = build_table(CHAINS)
TIMEOUT = 2.0


class Listener:
    """A UDP socket the server replies to; messages are parsed by python-osc."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def recv(self, timeout: float = TIMEOUT) -> OscMessage | None:
        self.sock.settimeout(timeout)
        try:
            return OscMessage(self.sock.recv(65535))
        except TimeoutError:
            return None

    def until(self, address: str, timeout: float = TIMEOUT) -> list[OscMessage]:
        """Messages up to and including the first to ``address``."""
        got, deadline = [], time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self.recv(max(0.01, deadline - time.monotonic()))
            if message is not None:
                got.append(message)
                if message.address == address:
                    return got
        raise AssertionError(f"no {address} within {timeout} s; got {[str(m) for m in got]}")

    def close(self) -> None:
        self.sock.close()


class Client:
    """A python-osc client for messages, a plain socket for raw bytes (both on 127.0.0.1)."""

    def __init__(self, server: OscServer, listener: Listener) -> None:
        self.osc = UDPClient("127.0.0.1", server.address[1], family=socket.AF_INET)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.server, self.listener = server, listener

    def raw(self, data: bytes) -> None:
        self.sock.sendto(data, ("127.0.0.1", self.server.address[1]))

    def send(self, address: str, *args, tags: str | None = None) -> None:
        """``tags``: one OSC type per argument; inferred by python-osc when None."""
        builder = OscMessageBuilder(address)
        for i, value in enumerate(args):
            builder.add_arg(value, tags[i] if tags else None)
        self.osc.send(builder.build())

    def sync(self) -> list[OscMessage]:
        """Ping; the replies that came before the pong."""
        self.send("/lmdm/ping")
        return self.listener.until("/lmdm/pong")[:-1]

    def errors(self) -> list[tuple]:
        return [tuple(m.params) for m in self.sync() if m.address == "/lmdm/error"]


@pytest.fixture
def models(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    for name in ("tiny", "house 2"):
        (folder / name).mkdir(parents=True)
        (folder / name / "manifest.json").write_text("{}")
    (folder / "not-a-bundle").mkdir()
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "manifest.json").write_text("{}")
    return folder


@pytest.fixture
def make():
    """``make(**config)`` -> (server, client, listener), all closed after the test."""
    opened = []

    def factory(table=TABLE, **config):
        listener = Listener()
        config = {"port": 0, "reply_port": listener.port, **config}
        server = OscServer(table, OscConfig(**config)).start()
        opened.append((server, listener))
        return server, Client(server, listener), listener

    yield factory
    for server, listener in opened:
        server.close()
        listener.close()


@pytest.fixture
def osc(make, models):
    return make(models_dir=models, status_interval=0.2)


# -- the table ---------------------------------------------------------------------------------

def test_every_row_has_a_handler_and_every_control_a_row():
    for row in TABLE:
        if row.target in QUERIES:
            assert hasattr(OscServer, f"_query_{row.target}"), row.address
        else:
            assert row.target in controls.CONTROL_TYPES, row.address
    assert {row.target for row in TABLE} >= set(controls.CONTROL_TYPES)


def test_fx_rows_are_derived_from_the_chains():
    fx = {row.address: row for row in TABLE if row.fx is not None}
    assert sorted(fx) == sorted([
        "/lmdm/fx/pre/gain/gain_db", "/lmdm/fx/post/reverb/room_size",
        "/lmdm/fx/post/reverb/wet_level", "/lmdm/fx/post/gain/gain_db",
        "/lmdm/fx/post/limiter/threshold_db"])
    assert fx["/lmdm/fx/post/limiter/threshold_db"].fx.index == 2
    assert (fx["/lmdm/fx/post/reverb/room_size"].minimum,
            fx["/lmdm/fx/post/reverb/room_size"].default) == (0.0, 0.3)
    assert all(row.effect == "immediately" for row in fx.values())
    twice = build_table([("post", "gain", {"g": (0, 1, 0)}), ("post", "gain", {"g": (0, 1, 0)})])
    assert {r.address for r in twice if r.fx} == {"/lmdm/fx/post/gain/g", "/lmdm/fx/post/gain-2/g"}


@pytest.mark.parametrize("chains, match", [
    ([("middle", "gain", {"g": (0, 1, 0)})], "chain"),
    ([("post", "my gain", {"g": (0, 1, 0)})], "segment"),
    ([("post", "gain", {"g/x": (0, 1, 0)})], "segment"),
    ([("post", "gain", {"g": (1, 0, 0)})], "minimum < maximum"),
    ([("post", "gain", {"g": (0, 1, 2)})], "default"),
    ([("post", "gain", {"g": (0, math.inf, 0)})], "minimum < maximum"),
])
def test_bad_chain_descriptions_are_named(chains, match):
    with pytest.raises(ValueError, match=match):
        build_table(chains)


def test_bundle_values_and_command_line_reach_the_table_and_server():
    manifest = SimpleNamespace(sampler=SimpleNamespace(cfg_scale=3.0, steps=4),
                               geometry=SimpleNamespace(context_frames=24))
    table = build_table(settings=TableSettings.from_manifest(manifest, prompt="organ"))
    assert (table.get("/lmdm/cfg").default, table.get("/lmdm/steps").default,
            table.get("/lmdm/eject").maximum, table.get("/lmdm/prompt").default) == (
        3.0, 4, 24, "organ")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert config_from_args(parser.parse_args([])) == OscConfig()
    config = config_from_args(parser.parse_args(
        ["--osc-port", "9100", "--allow", "192.168.1.0/24", "127.0.0.1/32"]))
    assert (config.port, config.allow) == (9100, ("192.168.1.0/24", "127.0.0.1/32"))


def test_docs_are_generated_from_the_table():
    doc = Path(__file__).resolve().parents[1] / "docs" / "osc.md"
    assert doc.read_text() == render(), (
        "docs/osc.md is stale: run `python -m lmdm_bridge.osc.docs > docs/osc.md`")
    for row in build_table():
        assert f"`{row.address}`" in doc.read_text()


# -- every address over UDP --------------------------------------------------------------------

def _example(row):
    """Valid arguments for a row and what the server should do with them."""
    if row.kind == "trigger":
        return ()
    if row.kind == "text":
        return ("string ensemble chorale",)
    if row.kind == "blend":
        return ("organ chorale", 0.75, "flute chorale", 0.25)
    if row.kind == "name":
        return ("tiny",)
    if row.target in ("subscribe", "unsubscribe"):
        return None  # needs the listener's port: see the test
    return (int(row.maximum),) if row.kind == "int" else (float(row.maximum),)


EXPECTED_CONTROLS = {
    "/lmdm/play": Play(), "/lmdm/stop": Stop(), "/lmdm/reset": Reset(),
    "/lmdm/prompt": SetPrompt("string ensemble chorale"),
    "/lmdm/prompts": SetPrompt((("organ chorale", 0.75), ("flute chorale", 0.25))),
    "/lmdm/cfg": SetCfg(20.0), "/lmdm/steps": SetSteps(64), "/lmdm/seed": Reseed(2**31 - 1),
    "/lmdm/eject": Eject(192), "/lmdm/gain": SetGain(12.0),
    "/lmdm/fx/pre/gain/gain_db": SetFx("pre", 0, "gain", "gain_db", 24.0),
    "/lmdm/fx/post/reverb/room_size": SetFx("post", 0, "reverb", "room_size", 1.0),
    "/lmdm/fx/post/reverb/wet_level": SetFx("post", 0, "reverb", "wet_level", 1.0),
    "/lmdm/fx/post/gain/gain_db": SetFx("post", 1, "gain", "gain_db", 24.0),
    "/lmdm/fx/post/limiter/threshold_db": SetFx("post", 2, "limiter", "threshold_db", 0.0),
}
REPLY_OF = {"/lmdm/ping": "/lmdm/pong", "/lmdm/status": "/lmdm/status",
            "/lmdm/models": "/lmdm/models"}


@pytest.mark.parametrize("row", TABLE.rows, ids=[row.address for row in TABLE.rows])
def test_every_address_over_udp(osc, models, row):
    server, client, listener = osc
    args = _example(row)
    if args is None:  # subscribe / unsubscribe: the reply port doubles as the subscriber
        client.send("/lmdm/subscribe", listener.port)
        assert listener.until("/lmdm/status")
        client.send(row.address, listener.port)
        client.sync()
        assert server.subscribers == ({("127.0.0.1", listener.port)}
                                      if row.target == "subscribe" else set())
    elif row.address in REPLY_OF:
        client.send(row.address, *args)
        reply = listener.until(REPLY_OF[row.address])[-1]
        if row.address == "/lmdm/models":
            assert reply.params == ["house 2", "tiny"]
    else:
        client.send(row.address, *args)
        assert client.errors() == []
        expected = (SwitchModel("tiny", models / "tiny") if row.address == "/lmdm/model"
                    else EXPECTED_CONTROLS[row.address])
        assert server.controls.drain() == [expected]
    assert server.counters.errors == 0 and server.counters.dropped == 0


def test_status_reply_alternates_keys_and_values(osc):
    server, client, listener = osc
    server.status.update(state="playing", prompt=(("a", 0.75), ("b", 0.25)), rtf=0.42,
                         blocks=7, underruns=1, xruns=2, latency=2230.5)
    client.send("/lmdm/status")
    params = listener.until("/lmdm/status")[-1].params
    values = dict(zip(params[::2], params[1::2], strict=True))
    assert list(values) == [key for key, _, _ in STATUS_KEYS]
    assert values["state"] == "playing" and values["prompt"] == "a 0.75 | b 0.25"
    assert values["rtf"] == pytest.approx(0.42) and values["latency"] == pytest.approx(2230.5)
    assert (values["blocks"], values["underruns"], values["xruns"]) == (7, 1, 2)
    # Counted before any reply leaves, so the status shows the message that asked for it.
    assert values["received"] == 1 and values["applied"] == 1
    with pytest.raises(ValueError, match="unknown status key"):
        server.status.update(temperature=3)


def test_subscribers_get_status_blocks_and_their_replies(osc):
    server, client, listener = osc
    subscriber = Listener()
    try:
        client.send("/lmdm/subscribe", subscriber.port)
        assert subscriber.until("/lmdm/status")  # at once ...
        assert subscriber.until("/lmdm/status", timeout=1.0)  # ... and every 0.2 s
        server.notify_block(3, 0.5)
        block = subscriber.until("/lmdm/block")[-1]
        assert block.params[0] == 3 and block.params[1] == pytest.approx(0.5)
        client.send("/lmdm/cfg", "loud")
        assert subscriber.until("/lmdm/error")[-1].params[0] == "/lmdm/cfg"
        client.send("/lmdm/unsubscribe", subscriber.port)
        client.sync()
        server.notify_block(4, 0.5)
        client.sync()
        while (late := subscriber.recv(timeout=0.3)) is not None:
            assert late.address != "/lmdm/block"
    finally:
        subscriber.close()


# -- argument conventions ----------------------------------------------------------------------

def test_words_sent_as_separate_strings_are_joined(osc):
    server, client, _ = osc
    client.send("/lmdm/prompt", "string", "ensemble", "chorale")  # Pd's [oscformat lmdm prompt]
    assert client.errors() == []
    assert server.controls.drain() == [SetPrompt("string ensemble chorale")]
    client.send("/lmdm/prompt", 120.0, "bpm", " techno ", tags="fss")  # Pd sends numbers as f
    assert client.errors() == []
    assert server.controls.drain() == [SetPrompt("120 bpm techno")]
    client.send("/lmdm/prompts", "organ", "chorale", 0.7, "flute", 3, tags="ssfsi")
    client.send("/lmdm/model", "house", "2")
    assert client.errors() == []
    blend, model = server.controls.drain()
    assert [text for text, _ in blend.prompt] == ["organ chorale", "flute"]
    assert [w for _, w in blend.prompt] == pytest.approx([0.7, 3.0])
    assert model.name == "house 2"


@pytest.mark.parametrize("address, sent, tags, expected", [
    ("/lmdm/steps", 8, "i", SetSteps(8)), ("/lmdm/steps", 8.0, "f", SetSteps(8)),
    ("/lmdm/steps", 8, "h", SetSteps(8)), ("/lmdm/steps", 8.0, "d", SetSteps(8)),
    ("/lmdm/cfg", 3, "i", SetCfg(3.0)), ("/lmdm/cfg", 3.5, "f", SetCfg(3.5)),
    ("/lmdm/seed", 7.0, "f", Reseed(7)), ("/lmdm/eject", 48, "i", Eject(48)),
    ("/lmdm/gain", -6, "i", SetGain(-6.0)),
    ("/lmdm/fx/post/reverb/room_size", 1, "i", SetFx("post", 0, "reverb", "room_size", 1.0)),
    ("/lmdm/play", 1, "i", Play()), ("/lmdm/play", True, "T", Play()),
])
def test_numbers_arrive_as_int_or_float(osc, address, sent, tags, expected):
    server, client, _ = osc
    client.send(address, sent, tags=tags)
    assert client.errors() == []
    assert server.controls.drain() == [expected]


@pytest.mark.parametrize("address, args, tags, reason", [
    ("/lmdm/steps", (7.5,), "f", "whole number"),
    ("/lmdm/steps", (0,), "i", "1..64"),
    ("/lmdm/cfg", (float("nan"),), "f", "finite"),
    ("/lmdm/cfg", (21.0,), "f", "0..20"),
    ("/lmdm/cfg", ("high",), "s", "number"),
    ("/lmdm/cfg", (), "", "one number"),
    ("/lmdm/cfg", (1.0, 2.0), "ff", "one number"),
    ("/lmdm/seed", (-1,), "i", "0..2147483647"),
    ("/lmdm/gain", (True,), "T", "number"),
    ("/lmdm/prompt", (), "", "text"),
    ("/lmdm/prompt", ("  ",), "s", "non-empty"),
    ("/lmdm/prompt", ("x" * 501,), "s", "at most 500"),
    ("/lmdm/prompt", (b"\x00\x01",), "b", "text"),
    ("/lmdm/prompts", ("organ", 0.5, "flute"), "sfs", "no weight"),
    ("/lmdm/prompts", (0.5, "organ"), "fs", "no text before"),
    ("/lmdm/prompts", ("organ", 0.0), "sf", "> 0"),
    ("/lmdm/prompts", ("organ", 101.0), "sf", "0..100"),
    ("/lmdm/play", ("now",), "s", "no argument"),
    ("/lmdm/subscribe", (0,), "i", "1..65535"),
    ("/lmdm/fx/post/reverb/room_size", (1.5,), "f", "0..1"),
    ("/lmdm/nonsense", (), "", "unknown address"),
    ("/lmdm/fx/post/*/room_size", (0.5,), "f", "wildcards"),
    ("/lmdm/fx/post/reverb", (0.5,), "f", "unknown address"),
])
def test_bad_arguments_are_answered_with_the_address(osc, address, args, tags, reason):
    server, client, _ = osc
    client.send(address, *args, tags=tags or None)
    errors = client.errors()
    assert len(errors) == 1 and errors[0][0] == address and reason in errors[0][1], errors
    assert server.controls.drain() == []
    assert server.counters.errors == 1


def test_a_button_release_triggers_nothing(osc):
    server, client, _ = osc
    client.send("/lmdm/stop", 0.0, tags="f")
    client.send("/lmdm/stop", False, tags="F")
    assert client.errors() == [] and server.controls.drain() == []


def test_unsupported_types_and_arrays_name_the_address(osc):
    _, client, _ = osc
    client.send("/lmdm/cfg", (1, 2, 3, 4), tags="m")  # MIDI
    client.raw(b"/lmdm/prompt\x00\x00\x00\x00,[s]\x00\x00\x00\x00a\x00\x00\x00")  # an array
    errors = client.errors()
    assert [e[0] for e in errors] == ["/lmdm/cfg", "/lmdm/prompt"]
    assert "not supported" in errors[0][1] and "arrays" in errors[1][1]


def test_bundles_nested_and_in_order(osc):
    server, client, listener = osc
    inner = OscBundleBuilder(IMMEDIATELY)
    for address, value in (("/lmdm/cfg", 2.0), ("/lmdm/steps", 4)):
        builder = OscMessageBuilder(address)
        builder.add_arg(value)
        inner.add_content(builder.build())
    outer = OscBundleBuilder(time.time() + 60)  # a future time tag is not waited for
    outer.add_content(_msg("/lmdm/prompt", "a", "b"))
    outer.add_content(inner.build())
    outer.add_content(_msg("/lmdm/play"))
    outer.add_content(_msg("/lmdm/status"))
    client.raw(outer.build().dgram)
    assert listener.until("/lmdm/status")
    assert server.controls.drain() == [SetPrompt("a b"), SetCfg(2.0), SetSteps(4), Play()]
    assert server.counters.received == 1 and server.counters.applied == 5


def _msg(address, *args):
    builder = OscMessageBuilder(address)
    for value in args:
        builder.add_arg(value)
    return builder.build()


@pytest.mark.parametrize("data", [
    b"", b"garbage", b"/lmdm/cfg", b"/lmdm/cfg\x00\x00\x00,f\x00\x00\x40",  # truncated float
    b"/lmdm/prompt\x00\x00\x00\x00,s\x00\x00\xff\xfe\x00\x00",  # not UTF-8
    b"/lmdm/ping\x00\x00,\x00\x00\x00extra",  # trailing bytes
    b"#bundle\x00" + bytes(8) + struct.pack(">i", 400) + b"/lmdm/ping\x00\x00",
    b"#bundle\x00" + bytes(4),  # truncated time tag
    b"#bundle\x00" + bytes(8) + struct.pack(">i", -4),
])
def test_malformed_datagrams_are_dropped_and_answered(osc, data):
    server, client, _ = osc
    client.raw(data)
    errors = client.errors()
    assert len(errors) == 1 and errors[0][0] == "" and "malformed" in errors[0][1]
    assert server.counters.dropped == 1 and server.controls.drain() == []


def test_bundles_nested_too_deep_are_dropped(osc):
    server, client, _ = osc
    data = _msg("/lmdm/play").dgram
    for _ in range(40):
        data = b"#bundle\x00" + bytes(8) + struct.pack(">i", len(data)) + data
    client.raw(data)
    assert "nested" in client.errors()[0][1]
    assert server.counters.dropped == 1 and server.controls.drain() == []


# -- who may send, how much is answered --------------------------------------------------------

def test_senders_outside_the_allow_list_are_ignored_and_counted(make):
    server, client, listener = make(allow=("10.0.0.0/8", "fd00::/8"))
    client.send("/lmdm/play")
    client.send("/lmdm/ping")
    deadline = time.monotonic() + TIMEOUT
    while server.counters.rejected < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.counters.rejected == 2 and server.counters.received == 2
    assert listener.recv(timeout=0.2) is None and server.controls.drain() == []


def test_ipv4_senders_on_a_dual_stack_socket_are_loopback(make):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        server, client, _ = make(host="::")
    except OSError as exc:
        pytest.skip(f"cannot bind '::': {exc}")
    client.sync()  # from ::ffff:127.0.0.1: allowed by 127.0.0.0/8, answered over IPv4
    assert server.counters.rejected == 0


def test_allow_list_takes_single_hosts_and_rejects_nonsense(make):
    server, client, _ = make(allow=("127.0.0.1/32",))
    client.sync()
    assert server.counters.rejected == 0
    with pytest.raises(ValueError, match="--allow"):
        make(allow=("localhost",))


@pytest.mark.parametrize("name", [
    "../secret", "..", "/etc/passwd", "tiny/../../secret", "a/b", "a\\b", "C:\\models\\tiny",
    "C:tiny", ".hidden", "~root", "ti\nny", "ti..ny", "x" * 101,
])
def test_model_names_cannot_leave_the_models_folder(osc, name):
    server, client, _ = osc
    client.send("/lmdm/model", name, tags="s")
    errors = client.errors()
    assert len(errors) == 1 and errors[0][0] == "/lmdm/model", errors
    assert server.controls.drain() == []


def test_model_switching_needs_a_bundle_and_a_folder(osc, make):
    server, client, _ = osc
    client.send("/lmdm/model", "not-a-bundle")
    client.send("/lmdm/model", "missing")
    assert [e[1].startswith("no bundle") for e in client.errors()] == [True, True]
    _, client, _ = make()  # no models folder configured
    client.send("/lmdm/model", "tiny")
    client.send("/lmdm/models")
    assert all("no models folder" in e[1] for e in client.errors())


def test_error_replies_are_rate_limited_per_sender(make):
    server, client, _ = make(errors_per_second=5.0)
    start = time.monotonic()
    for _ in range(60):
        client.send("/lmdm/cfg", 99.0)
    replies = len(client.errors())
    allowed = 5 + 5 * (time.monotonic() - start) + 1
    assert 5 <= replies <= allowed, (replies, allowed)
    assert server.counters.errors == 60
    assert server.counters.suppressed == 60 - replies


def test_a_stalled_worker_is_answered_not_queued_forever(make):
    server, client, _ = make()
    server.controls.max_actions = 3
    for seed in range(5):
        client.send("/lmdm/seed", seed)
    errors = client.errors()
    assert len(errors) == 2 and "pending" in errors[0][1]
    assert server.controls.drain() == [Reseed(0), Reseed(1), Reseed(2)]


def test_the_queue_coalesces_settings_and_keeps_actions():
    queue = ControlQueue(max_actions=2)
    for control in (SetCfg(1.0), Reseed(1), SetCfg(2.0), SetFx("post", 0, "r", "x", 0.1),
                    SetFx("post", 1, "r", "x", 0.2), SetFx("post", 0, "r", "x", 0.3),
                    Reseed(2)):
        queue.put(control)
    with pytest.raises(QueueFull):
        queue.put(Stop())
    assert queue.wait(0) and len(queue) == 5
    assert queue.drain() == [Reseed(1), SetCfg(2.0), SetFx("post", 1, "r", "x", 0.2),
                             SetFx("post", 0, "r", "x", 0.3), Reseed(2)]
    assert queue.superseded == 2 and not queue.wait(0.01)


def test_close_frees_the_port_and_can_be_repeated(make):
    server, client, _ = make()
    port = server.address[1]
    client.sync()
    server.close()
    server.close()
    assert not server._thread.is_alive()
    again = OscServer(TABLE, OscConfig(port=port))
    again.close()


def test_a_busy_port_is_a_named_error(make):
    server, _, _ = make()
    with pytest.raises(OSError, match="--osc-port"):
        OscServer(TABLE, OscConfig(port=server.address[1]))


# -- fuzzing -----------------------------------------------------------------------------------

_ARG = st.one_of(
    st.tuples(st.just("i"), st.integers(-2**31, 2**31 - 1)),
    st.tuples(st.just("h"), st.integers(-2**63, 2**63 - 1)),
    st.tuples(st.just("f"), st.floats(width=32)),
    st.tuples(st.just("d"), st.floats()),
    st.tuples(st.just("s"), st.text(max_size=30).filter(lambda s: "\x00" not in s)),
    st.tuples(st.just("b"), st.binary(min_size=1, max_size=12)),
    st.tuples(st.sampled_from("TFN"), st.none()),
)
_ADDRESS = st.one_of(
    # Not /lmdm/ping: Client.sync() takes the first pong as its own.
    st.sampled_from([row.address for row in TABLE if row.target != "ping"]),
    st.text(alphabet="/lmdfxpost*?[]{}abc", min_size=1, max_size=30).map(lambda s: "/" + s),
)


def _build(address: str, args: list) -> bytes:
    builder = OscMessageBuilder(address)
    for tag, value in args:
        builder.add_arg(value if tag not in "TF" else tag == "T", tag)
    return builder.build().dgram


_DATAGRAM = st.one_of(
    st.builds(_build, _ADDRESS, st.lists(_ARG, max_size=5)),
    st.binary(max_size=120),
    st.builds(lambda d, cut: d[:cut], st.builds(_build, _ADDRESS, st.lists(_ARG, max_size=4)),
              st.integers(0, 80)),
    st.builds(lambda d, i, b: d[:i % max(1, len(d))] + bytes([b]) + d[i % max(1, len(d)) + 1:],
              st.builds(_build, _ADDRESS, st.lists(_ARG, max_size=4)), st.integers(0, 200),
              st.integers(0, 255)),
    st.builds(lambda items: b"#bundle\x00" + bytes(8) + b"".join(
        struct.pack(">i", len(d)) + d for d in items),
        st.lists(st.builds(_build, _ADDRESS, st.lists(_ARG, max_size=3)), max_size=3)),
)


def _check_control(control) -> None:
    """Whatever was queued is within its row's range."""
    assert isinstance(control, tuple(controls.CONTROL_TYPES.values()))
    for name, value in vars(control).items():
        if isinstance(value, float):
            assert math.isfinite(value), (control, name)
    if isinstance(control, SetSteps):
        assert 1 <= control.steps <= 64
    if isinstance(control, SetCfg):
        assert 0 <= control.scale <= 20


def test_fuzzed_datagrams_never_stop_the_server(make, models):
    server, client, _ = make(models_dir=models)

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(_DATAGRAM, min_size=1, max_size=3))
    def run(datagrams):
        before = server.counters.as_dict()
        for data in datagrams:
            client.raw(data)
        client.sync()
        after = server.counters.as_dict()
        assert after["received"] - before["received"] == len(datagrams) + 1
        handled = sum(after[k] - before[k] for k in ("applied", "errors", "dropped"))
        empty = sum(d == b"#bundle\x00" + d[8:16] and len(d) == 16 for d in datagrams)
        assert handled >= len(datagrams) - empty + 1  # every datagram was accounted for
        for control in server.controls.drain():
            _check_control(control)

    run()
    assert server._thread.is_alive()
    client.sync()  # still answers


def test_the_parser_agrees_with_python_osc_on_valid_messages():
    @settings(max_examples=150, deadline=None)
    @given(_ADDRESS, st.lists(_ARG, max_size=6))
    def run(address, args):
        data = _build(address, args)
        (ours,) = wire.parse(data)
        theirs = OscMessage(data)
        assert ours.address == theirs.address and ours.problem is None
        for mine, other in zip(ours.args, theirs.params, strict=True):
            assert mine == other or (mine != mine and other != other)  # NaN

    run()


def test_read_args_never_raises_anything_but_arg_error():
    @settings(max_examples=150, deadline=None)
    @given(st.sampled_from(TABLE.rows),
           st.lists(st.one_of(st.integers(-2**63, 2**63), st.floats(), st.text(max_size=10),
                              st.binary(max_size=4), st.booleans(), st.none()), max_size=6))
    def run(row, args):
        try:
            read_args(row, tuple(args), TABLE.settings)
        except ArgError:
            pass

    run()
