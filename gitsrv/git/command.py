"""Run the git binary against one repository with a controlled environment."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

GIT = os.environ.get("GITSRV_GIT", "git")


class GitError(RuntimeError):
    """A git command that exited non-zero; carries its stderr."""

    def __init__(self, args: Sequence[str], returncode: int, stderr: str) -> None:
        super().__init__(f"git {' '.join(args)} exited with {returncode}: {stderr.strip()}")
        self.returncode = returncode
        self.stderr = stderr


def git_environ(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the server's environment without inherited GIT_* variables.

    Variables such as GIT_DIR or GIT_OBJECT_DIRECTORY from the caller's shell
    would make git read or write another repository.
    """
    environ = {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}
    environ.setdefault("HOME", os.environ.get("HOME", "/"))
    if extra:
        environ.update(extra)
    return environ


def config_environ(settings: Mapping[str, str]) -> dict[str, str]:
    """Express git config settings as GIT_CONFIG_COUNT/KEY/VALUE variables."""
    environ = {"GIT_CONFIG_COUNT": str(len(settings))}
    for index, (key, value) in enumerate(settings.items()):
        environ[f"GIT_CONFIG_KEY_{index}"] = key
        environ[f"GIT_CONFIG_VALUE_{index}"] = value
    return environ


def run_git(
    repo: Path,
    args: Sequence[str],
    *,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    """Run `git <args>` with GIT_DIR set to `repo` and return the finished process."""
    process = subprocess.run(
        [GIT, *args],
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        env=git_environ({"GIT_DIR": str(repo), **(env or {})}),
        check=False,
    )
    if check and process.returncode != 0:
        raise GitError(args, process.returncode, process.stderr.decode("utf-8", "replace"))
    return process
