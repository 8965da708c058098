"""pkt-line framing (gitprotocol-common): read from a stream, write, side-band."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from dulwich.protocol import (
    SIDE_BAND_CHANNEL_DATA,
    SIDE_BAND_CHANNEL_PROGRESS,
    pkt_line,
)

FLUSH = b"0000"
# A side-band packet carries at most 65520 bytes, one of them the band number.
SIDE_BAND_64K_PAYLOAD = 65515


class ProtocolError(ValueError):
    """A request that does not follow the git protocol."""


def read_exact(stream: BinaryIO, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def read_pkt(stream: BinaryIO) -> bytes | None:
    """Read one pkt-line; return None for a flush packet.

    Raises ProtocolError on a short read or a bad length.
    """
    header = read_exact(stream, 4)
    if len(header) < 4:
        raise ProtocolError("unexpected end of request while reading a pkt-line")
    try:
        size = int(header, 16)
    except ValueError:
        raise ProtocolError(f"invalid pkt-line length {header!r}") from None
    if size == 0:
        return None
    if size < 4:
        raise ProtocolError(f"invalid pkt-line length {header!r}")
    payload = read_exact(stream, size - 4)
    if len(payload) < size - 4:
        raise ProtocolError("unexpected end of request inside a pkt-line")
    return payload


def read_until_flush(stream: BinaryIO) -> Iterator[bytes]:
    while (packet := read_pkt(stream)) is not None:
        yield packet


def encode(data: bytes | None) -> bytes:
    return pkt_line(data)


def encode_text(text: str) -> bytes:
    return pkt_line(text.encode("utf-8") + b"\n")


def side_band(channel: int, data: bytes) -> bytes:
    """Frame `data` on a side-band channel, split to the 64k packet limit."""
    frames = []
    for start in range(0, len(data), SIDE_BAND_64K_PAYLOAD):
        frames.append(pkt_line(bytes([channel]) + data[start : start + SIDE_BAND_64K_PAYLOAD]))
    return b"".join(frames)


def side_band_data(data: bytes) -> bytes:
    return side_band(SIDE_BAND_CHANNEL_DATA, data)


def side_band_progress(message: str) -> bytes:
    return side_band(SIDE_BAND_CHANNEL_PROGRESS, message.encode("utf-8"))
