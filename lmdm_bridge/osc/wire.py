"""OSC 1.0 datagrams: a strict parser for what arrives and a builder for what is sent.

The parser is our own rather than python-osc's ``OscPacket`` because the daemon must classify
every hostile datagram without side effects: python-osc logs a warning on the root logger for
each unknown type tag or bundle element (a flood would drown the status line), skips unknown
tags without consuming their bytes, lets ``UnicodeDecodeError`` escape, and parses nested
bundles recursively without a depth bound. Here a datagram either parses completely or raises
:class:`Malformed`; a well-formed message with a type we do not take comes back with its
``problem`` set, so its sender can be told which address failed.

Bundle time tags are read and ignored: every control takes effect at a block boundary anyway,
so messages are handled on arrival, in datagram order.
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

from pythonosc.osc_message_builder import OscMessageBuilder

BUNDLE_PREFIX = b"#bundle\x00"
MAX_DEPTH = 8  # nested bundles; real senders nest one or two levels

# Fixed-size argument types: tag -> struct format (big-endian, OSC 1.0).
_FIXED = {"i": ">i", "h": ">q", "f": ">f", "d": ">d"}
_NO_DATA = {"T": True, "F": False, "N": None, "I": None}  # I: impulse ("bang")


class Malformed(ValueError):
    """The bytes are not an OSC packet (truncated, misaligned, bad UTF-8, ...)."""


class Message(NamedTuple):
    """One OSC message: ``tags`` without the leading comma; ``args`` as Python values (int,
    float, str, bytes, bool, None); ``problem`` says why the arguments could not be read."""

    address: str
    tags: str
    args: tuple[Any, ...]
    problem: str | None = None


def _string(data: bytes, start: int, end: int) -> tuple[str, int]:
    """A null-terminated string padded to 4 bytes, and the index after the padding."""
    stop = data.find(b"\x00", start, end)
    if stop < 0:
        raise Malformed("unterminated string")
    after = start + (stop - start) // 4 * 4 + 4
    if after > end:
        raise Malformed("string padding runs past the end")
    try:
        return data[start:stop].decode("utf-8"), after
    except UnicodeDecodeError as exc:
        raise Malformed(f"a string is not UTF-8 ({exc.reason})") from exc


def _message(data: bytes, start: int, end: int) -> Message:
    address, index = _string(data, start, end)
    if not address.startswith("/"):
        raise Malformed("an address must start with '/'")
    if index == end:
        return Message(address, "", ())  # OSC 1.0 allows a message without a type tag string
    tags, index = _string(data, index, end)
    if not tags.startswith(","):
        raise Malformed("the type tag string must start with ','")
    tags = tags[1:]
    args: list[Any] = []
    for tag in tags:
        if tag in _FIXED:
            size = struct.calcsize(_FIXED[tag])
            if index + size > end:
                raise Malformed(f"truncated '{tag}' argument")
            args.append(struct.unpack_from(_FIXED[tag], data, index)[0])
            index += size
        elif tag in "sS":
            value, index = _string(data, index, end)
            args.append(value)
        elif tag == "b":
            if index + 4 > end:
                raise Malformed("truncated blob size")
            (size,) = struct.unpack_from(">i", data, index)
            after = index + 4 + (size + 3) // 4 * 4
            if size < 0 or after > end:
                raise Malformed("blob size runs past the end")
            args.append(data[index + 4:index + 4 + size])
            index = after
        elif tag in _NO_DATA:
            args.append(_NO_DATA[tag])
        else:
            # Unknown data length: the rest cannot be read, but the address is known.
            what = "arrays" if tag in "[]" else f"type tag {tag!r}"
            return Message(address, tags, tuple(args), f"{what} not supported")
    if index != end:
        raise Malformed(f"{end - index} bytes after the last argument")
    return Message(address, tags, tuple(args))


def _packet(data: bytes, start: int, end: int, depth: int, out: list[Message]) -> None:
    if data.startswith(BUNDLE_PREFIX, start, end):
        if depth >= MAX_DEPTH:
            raise Malformed(f"bundles nested deeper than {MAX_DEPTH}")
        index = start + len(BUNDLE_PREFIX) + 8  # the time tag is ignored (module docstring)
        if index > end:
            raise Malformed("truncated bundle time tag")
        while index < end:
            if index + 4 > end:
                raise Malformed("truncated bundle element size")
            (size,) = struct.unpack_from(">i", data, index)
            index += 4
            if size <= 0 or size % 4 or index + size > end:
                raise Malformed(f"bundle element size {size} is invalid")
            _packet(data, index, index + size, depth + 1, out)
            index += size
    elif data.startswith(b"/", start, end):
        out.append(_message(data, start, end))
    else:
        raise Malformed("neither an OSC message nor a bundle")


def parse(data: bytes) -> list[Message]:
    """Every message in a datagram (a message or a bundle), in order; raises Malformed."""
    out: list[Message] = []
    _packet(data, 0, len(data), 0, out)
    return out


def build(address: str, args: tuple | list = ()) -> bytes:
    """An OSC message with tags chosen from the Python types: str ``s``, bool ``T``/``F``,
    int ``i`` (``h`` beyond 32 bits), float ``f``."""
    builder = OscMessageBuilder(address)
    for value in args:
        if isinstance(value, bool):
            builder.add_arg(value)
        elif isinstance(value, int):
            builder.add_arg(value, "i" if -2**31 <= value < 2**31 else "h")
        elif isinstance(value, float):
            builder.add_arg(value, "f")
        else:
            builder.add_arg(str(value), "s")
    return builder.build().dgram
