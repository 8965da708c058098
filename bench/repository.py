"""Build the bench repositories: run git on them, and import fast-import streams."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def git(repo: Path, *args: str, timeout: float = 300) -> str:
    """Run `git --git-dir REPO ARGS...` and return its stdout without surrounding whitespace.

    Raises RuntimeError with git's stderr when it fails.
    """
    result = subprocess.run(
        ["git", "--git-dir", str(repo), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {repo}: {result.stderr.strip()}")
    return result.stdout.strip()


def import_repository(dest: Path, write: Callable[[BinaryIO], None], timeout: float) -> None:
    """Run `git init --bare` at `dest`, then pipe what `write` produces into fast-import.

    Raises RuntimeError when fast-import fails or takes longer than `timeout` seconds.
    """
    subprocess.run(
        ["git", "init", "--quiet", "--bare", "--initial-branch=main", str(dest)],
        stdin=subprocess.DEVNULL,
        check=True,
        timeout=60,
    )
    with tempfile.TemporaryFile() as errors:
        # stderr goes to a file, not a pipe, so git cannot block on a full
        # pipe while this process is busy writing the stream.
        importer = subprocess.Popen(
            ["git", "--git-dir", str(dest), "fast-import", "--quiet"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
        assert importer.stdin is not None
        try:
            write(importer.stdin)
        except BrokenPipeError:
            pass  # fast-import stopped reading; its exit status and stderr show why.
        finally:
            try:
                importer.stdin.close()
            except BrokenPipeError:
                pass
        try:
            importer.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            importer.kill()
            importer.wait()
            raise RuntimeError(f"git fast-import did not finish within {timeout:g} s") from None
        errors.seek(0)
        if importer.returncode != 0:
            raise RuntimeError(f"git fast-import failed: {errors.read().decode(errors='replace').strip()}")
