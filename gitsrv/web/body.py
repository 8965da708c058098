"""The request body as a stream: length-limited, chunked or gzip-encoded."""

from __future__ import annotations

import io
import sys
import zlib
from typing import BinaryIO

READ_CHUNK = 64 * 1024


class UnsupportedEncodingError(ValueError):
    pass


class _LimitedReader(io.RawIOBase):
    """Read at most `remaining` bytes from a WSGI input that does not stop by itself."""

    def __init__(self, stream: BinaryIO, remaining: int) -> None:
        self.stream = stream
        self.remaining = remaining

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.remaining <= 0:
            return 0
        data = self.stream.read(min(len(buffer), self.remaining))
        self.remaining -= len(data)
        buffer[: len(data)] = data
        return len(data)


class _GzipReader(io.RawIOBase):
    """Decompress a gzip stream incrementally, never holding the whole body."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self.pending = b""
        self.done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self.pending and not self.done:
            compressed = self.stream.read(READ_CHUNK)
            if not compressed:
                self.pending = self.decompressor.flush()
                self.done = True
                break
            try:
                self.pending = self.decompressor.decompress(compressed)
            except zlib.error as error:
                raise OSError(f"invalid gzip request body: {error}") from error
        size = min(len(buffer), len(self.pending))
        buffer[:size] = self.pending[:size]
        self.pending = self.pending[size:]
        return size


def request_body(environ: dict) -> BinaryIO:
    """Return the decoded request body of a WSGI request as a buffered stream.

    gunicorn has already removed chunked transfer coding and marks that with
    `wsgi.input_terminated`; otherwise the stream is cut at Content-Length.
    Raises UnsupportedEncodingError for a Content-Encoding other than gzip.
    """
    raw = environ["wsgi.input"]
    if environ.get("wsgi.input_terminated"):
        stream: io.RawIOBase = _LimitedReader(raw, sys.maxsize)
    else:
        length = environ.get("CONTENT_LENGTH") or "0"
        stream = _LimitedReader(raw, int(length) if length.isdigit() else 0)
    encoding = (environ.get("HTTP_CONTENT_ENCODING") or "").strip().lower()
    if encoding in ("gzip", "x-gzip"):
        stream = _GzipReader(stream)
    elif encoding not in ("", "identity"):
        raise UnsupportedEncodingError(f"unsupported Content-Encoding {encoding!r}")
    return io.BufferedReader(stream, READ_CHUNK)  # type: ignore[arg-type]
