"""The OSC server: one UDP socket, one thread, validation and queueing only.

Every datagram is counted and classified — from a sender outside the allow-list (``rejected``,
ignored), not OSC (``dropped``, answered with an ``/lmdm/error`` naming no address), a message
that does not fit the table (``errors``, answered) or accepted (``applied``: a
:data:`~lmdm_bridge.osc.controls.Control` queued for the daemon, or a query answered from the
:class:`~lmdm_bridge.osc.status.StatusSnapshot`). Error replies are rate-limited per sender host,
so a client stuck in a loop cannot make the daemon flood the network. Nothing a sender does
stops the thread: even a bug in a handler is logged and answered as an error.

Replies go to the sender's host at ``reply_port`` and to the ports that host subscribed;
subscribers also get ``/lmdm/status`` every ``status_interval`` seconds and one ``/lmdm/block``
per :meth:`OscServer.notify_block`.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from lmdm_bridge.osc import controls, wire
from lmdm_bridge.osc.status import StatusSnapshot
from lmdm_bridge.osc.table import (
    PREFIX,
    QUERIES,
    STATUS_KEYS,
    AddressTable,
    ArgError,
    read_args,
    to_control,
)

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.0/8", "::1/128")
_WILDCARDS = set("*?[]{}")
_MAX_DATAGRAM = 65535


@dataclass(frozen=True)
class OscConfig:
    """Where the server listens and whom it answers. ``allow``: CIDR networks whose senders
    are served (default loopback only); ``models_dir``: the folder ``/lmdm/model NAME`` picks
    bundles from (None: switching is off); ``errors_per_second``: error replies per sender host
    (bursts up to the same number); ``status_interval``: seconds between status messages to
    subscribers."""

    host: str = "127.0.0.1"
    port: int = 9000
    reply_port: int = 9001
    allow: tuple[str, ...] = LOOPBACK
    models_dir: Path | None = None
    errors_per_second: float = 10.0
    status_interval: float = 1.0
    max_subscribers: int = 16


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The OSC options of ``lmdm-bridge serve``; :func:`config_from_args` reads them back."""
    group = parser.add_argument_group("OSC")
    group.add_argument("--osc-host", default=OscConfig.host,
                       help="address to listen on (0.0.0.0 for the network; default %(default)s)")
    group.add_argument("--osc-port", type=int, default=OscConfig.port,
                       help="UDP port for OSC messages (default %(default)s)")
    group.add_argument("--reply-port", type=int, default=OscConfig.reply_port,
                       help="UDP port on the sender's host for replies (default %(default)s)")
    group.add_argument("--allow", nargs="+", metavar="CIDR", default=list(LOOPBACK),
                       help="networks allowed to send (default: loopback only)")
    group.add_argument("--models-dir", type=Path, default=None,
                       help="folder of bundles that /lmdm/model NAME may switch to")


def config_from_args(args: argparse.Namespace) -> OscConfig:
    return OscConfig(host=args.osc_host, port=args.osc_port, reply_port=args.reply_port,
                     allow=tuple(args.allow), models_dir=args.models_dir)


@dataclass
class Counters:
    """Datagrams ``received``; messages ``applied`` (accepted) and answered with ``errors``;
    datagrams ``dropped`` (not OSC) and ``rejected`` (sender not allowed); error replies
    ``suppressed`` by the rate limit; replies whose send failed (``send_failures``)."""

    received: int = 0
    applied: int = 0
    errors: int = 0
    dropped: int = 0
    rejected: int = 0
    suppressed: int = 0
    send_failures: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class _RateLimit:
    """Token bucket per sender host: ``rate`` per second, bursts of ``rate``."""

    def __init__(self, rate: float, max_hosts: int = 1024) -> None:
        self.rate, self.max_hosts = rate, max_hosts
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, host: str) -> bool:
        now = time.monotonic()
        tokens, last = self._buckets.get(host, (self.rate, now))
        tokens = min(self.rate, tokens + (now - last) * self.rate)
        if len(self._buckets) >= self.max_hosts and host not in self._buckets:
            self._buckets.clear()  # bounded memory against spoofed sources; resets are harmless
        self._buckets[host] = (tokens - 1 if tokens >= 1 else tokens, now)
        return tokens >= 1


def _networks(allow: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    nets = []
    for cidr in allow:
        try:
            nets.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError as exc:
            raise ValueError(f"--allow {cidr!r} is not a network like 192.168.1.0/24: "
                             f"{exc}") from exc
    return tuple(nets)


def _bind(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise OSError(f"cannot use --osc-host {host!r}: {exc}") from exc
    try:
        if family == socket.AF_INET6 and hasattr(socket, "IPV6_V6ONLY"):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # "::" takes IPv4 too
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen for OSC on {host}:{port} ({exc.strerror or exc}); is "
                      "another lmdm-bridge running? choose another --osc-port") from exc
    sock.setblocking(False)
    return sock


class OscServer:
    """Serve ``table`` on a UDP socket (bound here, so a busy port fails at construction).

    ``status`` is read for replies; ``queue`` (``self.controls``) receives the validated
    commands; both are created when not given. Call :meth:`start`, then :meth:`close` (or use
    ``with``). Assigning ``self.table`` (e.g. after a model switch changed the bundle's
    defaults) takes effect from the next message.
    """

    def __init__(self, table: AddressTable, config: OscConfig = OscConfig(), *,
                 status: StatusSnapshot | None = None,
                 queue: controls.ControlQueue | None = None) -> None:
        self.table, self.config = table, config
        self.status = status if status is not None else StatusSnapshot()
        self.controls = queue if queue is not None else controls.ControlQueue()
        self.counters = Counters()
        self._networks = _networks(config.allow)
        self._limit = _RateLimit(config.errors_per_second)
        self._subscribers: set[tuple[str, int]] = set()
        self._lock = threading.Lock()  # subscribers and send_failures: the worker sends too
        self._warned: set[str] = set()
        self._outbox: list[tuple[set[tuple[str, int]], bytes | Callable[[], bytes]]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sock = _bind(config.host, config.port)
        self._wake_r, self._wake_w = socket.socketpair()  # lets close() interrupt select()

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """The bound host and port (the real port when ``port`` was 0)."""
        host, port = self._sock.getsockname()[:2]
        return host, port

    def start(self) -> OscServer:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="osc-server", daemon=True)
            self._thread.start()
            log.info("OSC on %s:%d, replies to port %d, allowed %s", *self.address,
                     self.config.reply_port, ", ".join(self.config.allow))
        return self

    def close(self) -> None:
        """Stop the thread and close the sockets; safe to call twice."""
        self._stop.set()
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass  # already closed
        if self._thread is not None:
            self._thread.join(timeout=5)
        for sock in (self._sock, self._wake_r, self._wake_w):
            sock.close()

    def __enter__(self) -> OscServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what the daemon calls -----------------------------------------------------------------

    @property
    def subscribers(self) -> set[tuple[str, int]]:
        with self._lock:
            return set(self._subscribers)

    def notify_block(self, index: int, rtf: float) -> None:
        """Send ``/lmdm/block index rtf`` to every subscriber (from any thread)."""
        data = wire.build(f"{PREFIX}/block", (int(index), float(rtf)))
        for destination in self.subscribers:
            self._send(data, destination)

    def status_message(self) -> bytes:
        """``/lmdm/status`` with the daemon's keys and the server's counters, alternating."""
        values = {**self.status.values(), **self.counters.as_dict()}
        args: list[Any] = []
        for key, _, _ in STATUS_KEYS:
            args += [key, values[key]]
        return wire.build(f"{PREFIX}/status", args)

    # -- the socket thread ---------------------------------------------------------------------

    def _run(self) -> None:
        interval = self.config.status_interval
        next_status = time.monotonic() + interval
        while not self._stop.is_set():
            try:
                timeout = max(0.0, next_status - time.monotonic())
                ready, _, _ = select.select([self._sock, self._wake_r], [], [], timeout)
                if self._sock in ready:
                    self._receive_all()
                if time.monotonic() >= next_status:
                    next_status = time.monotonic() + interval
                    if self.subscribers:
                        data = self.status_message()
                        for destination in self.subscribers:
                            self._send(data, destination)
            except Exception:  # keep serving; the pause keeps a persistent fault from spinning
                if self._stop.is_set():
                    break
                log.exception("OSC server loop")
                time.sleep(0.1)

    def _receive_all(self) -> None:
        for _ in range(256):  # then back to select(), so periodic status is never starved
            try:
                data, sender = self._sock.recvfrom(_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # Windows reports an earlier reply's ICMP "port unreachable" here.
                log.debug("recvfrom: %s", exc)
                continue
            try:
                self._datagram(data, sender[0])
            except Exception:  # a bug must not stop the server: log it, keep serving
                log.exception("OSC datagram from %s", sender[0])
            finally:
                self._flush()

    def _datagram(self, data: bytes, host: str) -> None:
        self.counters.received += 1
        if not self._allowed(host):
            self.counters.rejected += 1
            if len(self._warned) < 64 and host not in self._warned:
                self._warned.add(host)
                log.warning("ignoring OSC from %s: not in --allow %s", host,
                            " ".join(self.config.allow))
            return
        try:
            messages = wire.parse(data)
        except wire.Malformed as exc:
            self.counters.dropped += 1
            self._reply_error(host, "", f"malformed datagram: {exc}")
            return
        for message in messages:
            try:
                self._message(message, host)
            except Exception:
                log.exception("OSC message %s from %s", message.address, host)
                self.counters.errors += 1
                self._reply_error(host, message.address, "internal error (see the daemon's log)")

    def _allowed(self, host: str) -> bool:
        try:
            ip = ipaddress.ip_address(host.split("%", 1)[0])  # strip an IPv6 zone
        except ValueError:
            return False
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # an IPv4 sender on a dual-stack socket
        return any(ip in net for net in self._networks if net.version == ip.version)

    def _message(self, message: wire.Message, host: str) -> None:
        table = self.table  # read once: the daemon may swap in a new bundle's table
        row = table.get(message.address)
        try:
            if message.problem is not None:
                raise ArgError(message.problem)
            if row is None:
                raise ArgError("address patterns (wildcards) are not supported"
                               if _WILDCARDS & set(message.address)
                               else "unknown address (see docs/osc.md)")
            value = read_args(row, message.args, table.settings)
            if value is not None:  # None: a button's release
                if row.target in QUERIES:
                    getattr(self, f"_query_{row.target}")(host, value)
                elif row.target == "SwitchModel":
                    self.controls.put(self._switch_model(value))
                else:
                    self.controls.put(to_control(row, value))
        except (ArgError, controls.QueueFull) as exc:
            self.counters.errors += 1
            self._reply_error(host, message.address, str(exc))
            return
        self.counters.applied += 1

    # -- queries -------------------------------------------------------------------------------

    def _query_ping(self, host: str, _: Any) -> None:
        self._reply(host, wire.build(f"{PREFIX}/pong"))

    def _query_status(self, host: str, _: Any) -> None:
        self._reply(host, self.status_message)  # built at send time: counters include this

    def _query_subscribe(self, host: str, port: int) -> None:
        with self._lock:
            if (host, port) not in self._subscribers:
                if len(self._subscribers) >= self.config.max_subscribers:
                    raise ArgError(f"{self.config.max_subscribers} subscribers already; "
                                   "unsubscribe one first")
                self._subscribers.add((host, port))
        self._outbox.append(({(host, port)}, self.status_message))

    def _query_unsubscribe(self, host: str, port: int) -> None:
        with self._lock:
            self._subscribers.discard((host, port))

    def _query_models(self, host: str, _: Any) -> None:
        try:
            names = sorted(p.name for p in self._models_dir().iterdir()
                           if (p / "manifest.json").is_file())
        except OSError as exc:
            raise ArgError(f"cannot list the models folder: {exc.strerror or exc}") from exc
        self._reply(host, wire.build(f"{PREFIX}/models", names))

    def _models_dir(self) -> Path:
        if self.config.models_dir is None:
            raise ArgError("no models folder is configured (--models-dir)")
        if not self.config.models_dir.is_dir():
            raise ArgError("the configured models folder does not exist")
        return self.config.models_dir

    def _switch_model(self, name: str) -> controls.SwitchModel:
        path = self._models_dir() / name  # name is a checked plain name: it stays inside
        if not (path / "manifest.json").is_file():
            raise ArgError(f"no bundle {name!r} in the models folder (/lmdm/models lists them)")
        return controls.SwitchModel(name, path)

    # -- sending -------------------------------------------------------------------------------

    def _reply(self, host: str, data: bytes | Callable[[], bytes]) -> None:
        """Queue a reply to ``host``'s reply port and its subscribed ports. Replies leave in
        :meth:`_flush`, after the datagram was counted, so a client that got its answer reads
        counters that include its message."""
        destinations = {(host, self.config.reply_port)}
        destinations |= {s for s in self.subscribers if s[0] == host}
        self._outbox.append((destinations, data))

    def _flush(self) -> None:
        outbox, self._outbox = self._outbox, []
        for destinations, data in outbox:
            payload = data() if callable(data) else data
            for destination in destinations:
                self._send(payload, destination)

    def _reply_error(self, host: str, address: str, reason: str) -> None:
        log.debug("OSC error from %s: %s %s", host, address or "(datagram)", reason)
        if not self._limit.allow(host):
            self.counters.suppressed += 1
            return
        self._reply(host, wire.build(f"{PREFIX}/error", (address, reason)))

    def _send(self, data: bytes, destination: tuple[str, int]) -> None:
        try:
            self._sock.sendto(data, destination)
        except OSError as exc:  # unreachable host, full buffer: a lost reply, not a crash
            with self._lock:
                self.counters.send_failures += 1
            log.debug("OSC send to %s:%d failed: %s", *destination, exc)

