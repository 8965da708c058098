"""git-upload-pack over stateless RPC, served by the git binary and streamed.

git's own `upload-pack --stateless-rpc` does the negotiation and pack
generation (protocol v0 and v2, shallow, deepen, filters, include-tag);
this module feeds it the request body and streams its output without
holding the pack in memory.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from gitsrv.git.command import GIT, config_environ, git_environ

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
# Requests up to this size are read whole to decide whether to use the pack cache.
PEEK_BYTES = 1024 * 1024

# Partial clone needs filters, and a lazy fetch of a missing blob requests
# it by id, which protocol v0 allows only with allowReachableSHA1InWant.
UPLOAD_PACK_CONFIG = {
    "uploadpack.allowFilter": "true",
    "uploadpack.allowReachableSHA1InWant": "true",
}


PACK_CACHE_PROGRAM = Path(__file__).with_name("pack_cache.py")


@dataclass(frozen=True)
class PackCache:
    """Location and size limit of the cache of generated packs."""

    directory: Path
    max_bytes: int


def _environ(repo: Path, git_protocol: str | None, cache: PackCache | None = None) -> dict[str, str]:
    config = dict(UPLOAD_PACK_CONFIG)
    extra = {"GIT_DIR": str(repo)}
    if cache is not None:
        # git honours packObjectsHook only from protected configuration,
        # which includes GIT_CONFIG_COUNT variables, never from the repository.
        # -I -S: the hook needs only the standard library, and skipping
        # site-packages makes the interpreter start faster on every pack.
        config["uploadpack.packObjectsHook"] = (
            f"{shlex.quote(sys.executable)} -I -S {shlex.quote(str(PACK_CACHE_PROGRAM))}"
        )
        extra["GITSRV_PACK_CACHE_DIR"] = str(cache.directory)
        extra["GITSRV_PACK_CACHE_MAX_BYTES"] = str(cache.max_bytes)
    extra.update(config_environ(config))
    if git_protocol:
        extra["GIT_PROTOCOL"] = git_protocol
    return git_environ(extra)


def protocol_version(git_protocol: str | None) -> int:
    """Return the protocol version a `Git-Protocol` header value requests."""
    version = 0
    for item in (git_protocol or "").split(":"):
        key, _, value = item.partition("=")
        if key == "version" and value.isdigit():
            version = max(version, int(value))
    return version


def advertise_refs(repo: Path, git_protocol: str | None) -> bytes:
    """Return upload-pack's ref advertisement (v0) or capability advertisement (v2)."""
    result = subprocess.run(
        [GIT, "upload-pack", "--stateless-rpc", "--advertise-refs", str(repo)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env=_environ(repo, git_protocol),
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"git upload-pack --advertise-refs failed: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout


def _feed(process: subprocess.Popen[bytes], prefix: bytes, body: BinaryIO) -> None:
    assert process.stdin is not None
    try:
        process.stdin.write(prefix)
        shutil.copyfileobj(body, process.stdin, CHUNK)
    except (BrokenPipeError, ValueError):
        # upload-pack stopped reading early (for example on a bad request);
        # its exit status and stderr tell what happened.
        pass
    except OSError as error:
        log.warning("reading the upload-pack request failed: %s", error)
    finally:
        try:
            process.stdin.close()
        except OSError:
            pass


def sends_haves(prefix: bytes) -> bool:
    """Check whether the pkt-lines in `prefix`, the start of a request, include a `have` line."""
    position = 0
    while position + 4 <= len(prefix):
        try:
            size = int(prefix[position : position + 4], 16)
        except ValueError:
            return True
        if size < 4:
            position += 4
            continue
        if prefix[position + 4 : position + 9] == b"have ":
            return True
        position += size
    return False


def has_bitmap(repo: Path) -> bool:
    return any((repo / "objects" / "pack").glob("*.bitmap"))


def choose_cache(repo: Path, body: BinaryIO, cache: PackCache | None) -> tuple[bytes, PackCache | None]:
    """Read the start of the request and decide whether its pack may come from the cache.

    Only requests without `have` lines (clones, and fetches into empty
    repositories) repeat often enough to be worth caching. An incremental
    fetch is specific to one client's state, so starting the cache program
    for it costs more than it saves. A repository with a reachability bitmap
    is not cached either: there pack-objects answers a clone by reusing its
    pack almost verbatim, as fast as a cache hit. Returns the bytes read,
    which must be sent to upload-pack before the rest of the body.
    """
    if cache is None:
        return b"", None
    prefix = body.read(PEEK_BYTES)
    if has_bitmap(repo):
        return prefix, None
    complete = len(prefix) < PEEK_BYTES or not body.peek(1)
    if not complete or sends_haves(prefix):
        return prefix, None
    return prefix, cache


def serve(
    repo: Path, body: BinaryIO, git_protocol: str | None, repo_name: str, cache: PackCache | None = None
) -> Iterator[bytes]:
    """Run one upload-pack request; yield the response as git writes it."""
    prefix, cache = choose_cache(repo, body, cache)
    process = subprocess.Popen(
        [GIT, "upload-pack", "--stateless-rpc", str(repo)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_environ(repo, git_protocol, cache),
    )
    feeder = threading.Thread(target=_feed, args=(process, prefix, body), daemon=True)
    feeder.start()
    assert process.stdout is not None and process.stderr is not None
    finished = False
    try:
        while chunk := process.stdout.read1(CHUNK):
            yield chunk
        finished = True
    finally:
        if not finished:
            # The client went away: stop generating a pack that no client reads.
            process.kill()
        feeder.join(timeout=5)
        stderr = process.stderr.read()
        returncode = process.wait()
        if returncode != 0 and finished:
            log.warning(
                "upload-pack exited with %d: repo=%s error=%s",
                returncode,
                repo_name,
                stderr.decode("utf-8", "replace").strip(),
            )
