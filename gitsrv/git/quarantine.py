"""A quarantine object directory for the objects of one push.

The pushed pack is unpacked or indexed into a temporary object directory
inside the repository's `objects/`. Git commands that inspect the push see
it through GIT_OBJECT_DIRECTORY, with the real store as an alternate. Only
when at least one ref update is accepted are the objects moved into the
repository; otherwise the directory is deleted and the push leaves nothing.
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path
from typing import BinaryIO

from gitsrv.git.command import GIT, git_environ

log = logging.getLogger(__name__)

# Packs with fewer objects are exploded into loose objects, as git's
# receive.unpackLimit (default 100) does; larger ones are kept as a pack.
UNPACK_LIMIT = 100
COPY_CHUNK = 256 * 1024


class UnpackError(RuntimeError):
    """The pushed pack could not be read or stored."""


class Quarantine:
    """A temporary object directory; use as a context manager to clean it up."""

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self.objects = repo / "objects"
        self.path = Path(tempfile.mkdtemp(prefix="tmp_objdir-gitsrv-", dir=self.objects))
        self.received = False

    def __enter__(self) -> Quarantine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    @property
    def environ(self) -> dict[str, str]:
        """Variables that make git read objects from the quarantine and the repository.

        GIT_QUARANTINE_PATH also makes git refuse ref updates while it is set.
        """
        return {
            "GIT_DIR": str(self.repo),
            "GIT_OBJECT_DIRECTORY": str(self.path),
            "GIT_ALTERNATE_OBJECT_DIRECTORIES": str(self.objects),
            "GIT_QUARANTINE_PATH": str(self.path),
        }

    def receive_pack(self, stream: BinaryIO) -> int:
        """Store the pack that follows in `stream`; return its object count.

        A stream that ends before any pack data means the push sent no pack
        (only deletions). Raises UnpackError when git rejects the data.
        """
        header = b""
        while len(header) < 12:
            chunk = stream.read(12 - len(header))
            if not chunk:
                break
            header += chunk
        if not header:
            return 0
        if len(header) < 12 or header[:4] != b"PACK":
            raise UnpackError("invalid pack header")
        version, count = struct.unpack(">II", header[4:])
        if version not in (2, 3):
            raise UnpackError(f"unsupported pack version {version}")

        pack_header = f"--pack_header={version},{count}"
        if count < UNPACK_LIMIT:
            args = [GIT, "unpack-objects", "-q", pack_header]
        else:
            args = [GIT, "index-pack", "--stdin", "--fix-thin", pack_header]
        # Output goes to files, not pipes, so git can never block on a full
        # pipe while this thread is busy writing the pack to its stdin.
        with tempfile.TemporaryFile() as output:
            process = subprocess.Popen(
                args,
                stdin=subprocess.PIPE,
                stdout=output,
                stderr=output,
                env=git_environ(self.environ),
                cwd=self.repo,
            )
            assert process.stdin is not None
            try:
                while chunk := stream.read(COPY_CHUNK):
                    process.stdin.write(chunk)
            except BrokenPipeError:
                pass
            except OSError as error:
                process.kill()
                process.wait()
                raise UnpackError(f"reading the pack failed: {error}") from error
            finally:
                try:
                    process.stdin.close()
                except BrokenPipeError:
                    pass
            returncode = process.wait()
            output.seek(0)
            text = output.read().decode("utf-8", "replace").strip()
        if returncode != 0:
            lines = text.splitlines()
            raise UnpackError(lines[-1] if lines else f"{args[1]} exited with {returncode}")
        self.received = True
        log.debug("received %d objects", count)
        return count

    def migrate(self) -> None:
        """Move the quarantined objects into the repository's object store.

        Pack files are moved before their indexes so that no reader sees an
        index without its pack; existing objects are left in place.
        """
        for source in sorted(self.path.rglob("*"), key=_migration_order):
            if source.is_dir():
                continue
            relative = source.relative_to(self.path)
            target = self.objects / relative
            if target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)


def _migration_order(path: Path) -> tuple[int, str]:
    order = {".pack": 0, ".rev": 1, ".idx": 2}
    return (order.get(path.suffix, 0), str(path))
