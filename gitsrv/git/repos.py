"""Find, create and list the bare repositories under the repos folder.

A repository is named by its path under the folder, without the `.git`
suffix. On disk it is `<name>.git`, and a folder without the suffix is found
too, for repositories copied in by hand.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

GIT_SUFFIX = ".git"


class InvalidRepoPathError(ValueError):
    """A repository path that is empty, leaves the repos folder or has bad parts."""


@dataclass(frozen=True)
class Repository:
    name: str
    path: Path


def normalize_name(path: str) -> str:
    """Turn a URL or command-line path into a repository name.

    Strips slashes and one `.git` suffix, and rejects empty, `.` and `..`
    components, hidden components, backslashes and control characters, so
    the name can never leave the repos folder.
    """
    name = path.strip("/")
    if name.endswith(GIT_SUFFIX):
        name = name[: -len(GIT_SUFFIX)]
    if not name:
        raise InvalidRepoPathError("empty repository path")
    if "\\" in name or any(ord(char) < 0x20 or char == "\x7f" for char in name):
        raise InvalidRepoPathError(f"invalid repository path {path!r}")
    for component in name.split("/"):
        if component in ("", ".", "..") or component.startswith("."):
            raise InvalidRepoPathError(f"invalid repository path {path!r}")
    return name


def _is_bare_repository(path: Path) -> bool:
    return (path / "HEAD").is_file() and (path / "objects").is_dir() and (path / "refs").is_dir()


def _contains_symlink(root: Path, relative: str) -> bool:
    current = root
    for component in relative.split("/"):
        current = current / component
        if current.is_symlink():
            return True
    return False


def find_repository(repos_dir: Path, path: str) -> Repository | None:
    """Return the repository a URL path names, or None when there is none.

    Raises InvalidRepoPathError for a path that could leave the folder; a
    path through a symlink is treated as not found.
    """
    name = normalize_name(path)
    root = repos_dir.resolve()
    for candidate in (name + GIT_SUFFIX, name):
        if _contains_symlink(root, candidate):
            continue
        full = root / candidate
        if _is_bare_repository(full):
            return Repository(name, full)
    return None


def create_repository(repos_dir: Path, path: str, default_branch: str = "main") -> Repository:
    """Create an empty bare repository whose HEAD points at `default_branch`."""
    name = normalize_name(path)
    if find_repository(repos_dir, name) is not None:
        raise FileExistsError(f"repository {name!r} already exists")
    full = repos_dir.resolve() / (name + GIT_SUFFIX)
    full.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["git", "init", "--quiet", "--bare", f"--initial-branch={default_branch}", str(full)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return Repository(name, full)


def list_repositories(repos_dir: Path) -> list[Repository]:
    """List every bare repository under the folder, sorted by name."""
    root = repos_dir.resolve()
    found: list[Repository] = []
    if not root.is_dir():
        return found
    for current, dirs, _files in os.walk(root):
        folder = Path(current)
        if folder != root and _is_bare_repository(folder):
            relative = folder.relative_to(root).as_posix()
            name = relative[: -len(GIT_SUFFIX)] if relative.endswith(GIT_SUFFIX) else relative
            found.append(Repository(name, folder))
            dirs.clear()
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    return sorted(found, key=lambda repo: repo.name)
