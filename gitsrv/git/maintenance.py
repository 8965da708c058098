"""Repository upkeep after accepted pushes, run in the background.

`git gc --auto` packs loose objects and refs when git's own thresholds are
reached. `git commit-graph write --reachable --split` adds the new commits
to an incremental commit-graph, whose generation numbers let
`merge-base --is-ancestor` classify a force-push on a long history without
walking all of it.
"""

from __future__ import annotations

import logging
import subprocess
import threading
from pathlib import Path

from gitsrv.git.command import GIT, git_environ

log = logging.getLogger(__name__)

STEPS = (
    ["gc", "--auto", "--quiet"],
    ["commit-graph", "write", "--reachable", "--split", "--no-progress"],
)

_running: set[Path] = set()
_lock = threading.Lock()


def _run(repo: Path) -> None:
    try:
        for args in STEPS:
            try:
                result = subprocess.run(
                    [GIT, *args],
                    env=git_environ({"GIT_DIR": str(repo)}),
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=1800,
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired) as error:
                log.warning("git %s failed: repo=%s error=%s", args[0], repo, error)
                continue
            if result.returncode != 0:
                log.warning(
                    "git %s exited with %d: repo=%s error=%s",
                    args[0], result.returncode, repo, result.stderr.decode("utf-8", "replace").strip(),
                )
    finally:
        with _lock:
            _running.discard(repo)


def schedule(repo: Path) -> None:
    """Start upkeep of `repo` in a background thread unless this process is already on it.

    git's own lock files keep runs from other processes apart.
    """
    with _lock:
        if repo in _running:
            return
        _running.add(repo)
    threading.Thread(target=_run, args=(repo,), name="repo-maintenance", daemon=True).start()
