"""A pack cache in front of `git pack-objects`, run as uploadpack.packObjectsHook.

git upload-pack runs this program instead of pack-objects, appending the
command it would have run (`git pack-objects ARGS...`) and writing the
pack-objects input (wants, haves, shallow lines) to its stdin. For a request
it has served before at the same repository state, the program sends the
cached file. Otherwise it runs pack-objects, streams its output and keeps a
copy.

The cache key is the SHA-256 of the repository path, the pack-objects
arguments (without progress options), the exact input, and every ref with
its object id. Any ref change or any other want/have list therefore misses.
An exclusive lock per key lets one process fill an entry while concurrent
requests for the same key wait and then read the finished file. Entries are
evicted, least recently used first, when the cache grows past its limit.

This file runs as a separate program for every pack a client fetches, so it
imports only the standard library.

Environment:
  GITSRV_PACK_CACHE_DIR        folder of the cache entries (required)
  GITSRV_PACK_CACHE_MAX_BYTES  size limit of the folder (default 1 GiB)
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

KEY_VERSION = b"gitsrv-pack-cache-1\n"
CHUNK = 256 * 1024
DEFAULT_MAX_BYTES = 1 << 30
LOCK_TIMEOUT = 600.0
# Options that change only stderr progress, not the pack.
PROGRESS_OPTIONS = {"--progress", "--quiet", "-q", "--all-progress", "--all-progress-implied"}


def key_arguments(args: list[str]) -> tuple[list[str], bytes]:
    """Return the arguments that shape the pack, and the content of a shallow file.

    For a shallow fetch upload-pack runs `git --shallow-file FILE
    pack-objects ...` with a temporary FILE: its content, not its name,
    belongs in the key.
    """
    key_args = []
    shallow = b""
    position = 0
    while position < len(args):
        argument = args[position]
        if argument == "--shallow-file" and position + 1 < len(args):
            path = args[position + 1]
            if path:
                with open(path, "rb") as shallow_file:
                    shallow = shallow_file.read()
            position += 2
            continue
        if argument not in PROGRESS_OPTIONS:
            key_args.append(argument)
        position += 1
    return key_args, shallow


def cache_key(repo: Path, args: list[str], request: bytes, refs: bytes) -> str:
    key_args, shallow = key_arguments(args)
    digest = hashlib.sha256(KEY_VERSION)
    for part in (str(repo).encode(), "\0".join(key_args).encode(), shallow, request, refs):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def read_refs(repo: Path) -> bytes:
    return subprocess.run(
        ["git", "for-each-ref", "--format=%(objectname) %(refname)"],
        cwd=repo,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=True,
    ).stdout


def copy_file(path: Path, output) -> None:
    with open(path, "rb") as source:
        while chunk := source.read(CHUNK):
            output.write(chunk)
    output.flush()


def run_and_fill(args: list[str], request: bytes, entry: Path, output) -> int:
    """Run pack-objects, stream its stdout to `output` and store it as `entry` if it succeeds."""
    temporary = entry.with_name(f"{entry.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as copy:
            process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            assert process.stdin is not None and process.stdout is not None
            process.stdin.write(request)
            process.stdin.close()
            while chunk := process.stdout.read(CHUNK):
                copy.write(chunk)
                output.write(chunk)
            output.flush()
            returncode = process.wait()
        if returncode == 0:
            os.replace(temporary, entry)
        return returncode
    finally:
        temporary.unlink(missing_ok=True)


def acquire(lock_path: Path) -> int | None:
    """Take the key's exclusive lock, waiting up to LOCK_TIMEOUT; None if it timed out."""
    descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + LOCK_TIMEOUT
    while True:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return descriptor
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(descriptor)
                return None
            time.sleep(0.02)


def evict(root: Path, max_bytes: int) -> None:
    """Delete the least recently used entries until the cache is within 90% of its limit."""
    entries = []
    total = 0
    stale = time.time() - 2 * LOCK_TIMEOUT
    for path in root.glob("*/*"):
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        if path.suffix in (".lock", ".tmp"):
            # A lock or temporary file this old belongs to no running process.
            if stat.st_mtime < stale and not path.with_suffix("").exists():
                path.unlink(missing_ok=True)
            continue
        entries.append((stat.st_mtime, stat.st_size, path))
        total += stat.st_size
    if total <= max_bytes:
        return
    for _mtime, size, path in sorted(entries):
        if total <= max_bytes * 0.9:
            break
        try:
            path.unlink()
            total -= size
        except FileNotFoundError:
            pass


def main(argv: list[str]) -> int:
    args = argv[1:]
    if "pack-objects" not in args[1:]:
        print(f"usage: {argv[0]} git pack-objects [ARGS...] (run by upload-pack as its packObjectsHook)", file=sys.stderr)
        return 2
    root_setting = os.environ.get("GITSRV_PACK_CACHE_DIR")
    request = sys.stdin.buffer.read()
    output = sys.stdout.buffer
    if not root_setting:
        # No cache configured: behave exactly like pack-objects.
        return subprocess.run(args, input=request, stdout=output, check=False).returncode

    repo = Path(os.environ.get("GIT_DIR") or ".").resolve()
    root = Path(root_setting)
    max_bytes = int(os.environ.get("GITSRV_PACK_CACHE_MAX_BYTES") or DEFAULT_MAX_BYTES)
    key = cache_key(repo, args, request, read_refs(repo))
    entry = root / key[:2] / key
    entry.parent.mkdir(parents=True, exist_ok=True)

    if entry.exists():
        os.utime(entry)
        copy_file(entry, output)
        return 0

    lock = acquire(entry.with_suffix(".lock"))
    if lock is None:
        return subprocess.run(args, input=request, stdout=output, check=False).returncode
    try:
        if entry.exists():
            os.utime(entry)
            copy_file(entry, output)
            return 0
        returncode = run_and_fill(args, request, entry, output)
    finally:
        os.close(lock)
    if returncode == 0:
        evict(root, max_bytes)
    return returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv))
