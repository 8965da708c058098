"""git-receive-pack wire format: ref advertisement, commands and report-status.

Only the protocol lives here; what a push may do is decided in
gitsrv.access.policy and carried out in gitsrv.push.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from gitsrv import __version__
from gitsrv.access.policy import ZERO_ID, RefUpdate
from gitsrv.git import pktline
from gitsrv.git.refs import read_refs

CAPABILITIES = (
    "report-status",
    "report-status-v2",
    "delete-refs",
    "side-band-64k",
    "quiet",
    "atomic",
    "ofs-delta",
    "push-options",
    "object-format=sha1",
    f"agent=gitsrv/{__version__}",
)


def advertise_refs(repo: Path, protocol_version: int = 0) -> bytes:
    """Return the receive-pack ref advertisement (without the `# service` header)."""
    capabilities = " ".join(CAPABILITIES).encode()
    refs = read_refs(repo)
    lines = []
    if protocol_version == 1:
        lines.append(pktline.encode(b"version 1\n"))
    if not refs:
        lines.append(pktline.encode(ZERO_ID.encode() + b" capabilities^{}\0" + capabilities + b"\n"))
    for index, (object_id, name) in enumerate(refs):
        line = f"{object_id} {name}".encode("utf-8", "surrogateescape")
        if index == 0:
            line += b"\0" + capabilities
        lines.append(pktline.encode(line + b"\n"))
    lines.append(pktline.FLUSH)
    return b"".join(lines)


@dataclass
class PushRequest:
    """The commands part of a receive-pack request."""

    updates: list[RefUpdate]
    capabilities: set[str]
    push_options: list[str] = field(default_factory=list)
    shallow: list[str] = field(default_factory=list)

    @property
    def atomic(self) -> bool:
        return "atomic" in self.capabilities

    @property
    def side_band(self) -> bool:
        return "side-band-64k" in self.capabilities or "side-band" in self.capabilities

    @property
    def quiet(self) -> bool:
        return "quiet" in self.capabilities


def _is_object_id(text: str) -> bool:
    return len(text) == 40 and all(char in "0123456789abcdef" for char in text)


def read_request(stream: BinaryIO) -> PushRequest | None:
    """Read the commands (and push options) of a receive-pack request.

    Returns None for a request with no commands, which is the probe git sends
    before a large push. Leaves `stream` at the start of the pack data.
    Raises pktline.ProtocolError for a malformed request.
    """
    updates: list[RefUpdate] = []
    capabilities: set[str] = set()
    shallow: list[str] = []
    for packet in pktline.read_until_flush(stream):
        line, _, capability_text = packet.rstrip(b"\n").partition(b"\0")
        if not updates and capability_text:
            capabilities = set(capability_text.decode("ascii", "replace").split())
        text = line.decode("utf-8", "surrogateescape")
        if text.startswith("shallow "):
            shallow.append(text.split(" ", 1)[1])
            continue
        parts = text.split(" ")
        if len(parts) != 3 or not (_is_object_id(parts[0]) and _is_object_id(parts[1])):
            raise pktline.ProtocolError(f"invalid receive-pack command {text!r}")
        updates.append(RefUpdate(old=parts[0], new=parts[1], ref=parts[2]))
    if not updates:
        return None

    push_options: list[str] = []
    if "push-options" in capabilities:
        push_options = [
            packet.rstrip(b"\n").decode("utf-8", "replace")
            for packet in pktline.read_until_flush(stream)
        ]
    return PushRequest(updates, capabilities, push_options, shallow)


def format_report(
    request: PushRequest,
    unpack_error: str | None,
    results: Iterable[tuple[str, str | None]],
) -> bytes:
    """Format report-status: `unpack ok`, then `ok <ref>` or `ng <ref> <reason>`.

    The same lines serve report-status-v2, which only adds option lines this
    server never needs to send.
    """
    lines = [pktline.encode_text(f"unpack {unpack_error or 'ok'}")]
    for ref, error in results:
        lines.append(pktline.encode_text(f"ng {ref} {error}" if error else f"ok {ref}"))
    lines.append(pktline.FLUSH)
    report = b"".join(lines)
    if request.side_band:
        return pktline.side_band_data(report)
    return report
