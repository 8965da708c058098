"""Read the facts the push policy needs from the repository and its quarantine."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from gitsrv.access.policy import ZERO_ID, Classification, RefUpdate, classify
from gitsrv.git.command import run_git


class ObjectInspector:
    """Answer object questions with git, seeing quarantined objects too."""

    def __init__(self, repo: Path, environ: Mapping[str, str]) -> None:
        self.repo = repo
        self.environ = dict(environ)

    def _run(self, args: list[str], input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return run_git(self.repo, args, input=input, env=self.environ, check=False)

    def peel_to_commits(self, object_ids: Iterable[str]) -> dict[str, str | None]:
        """Map each object id to the commit it peels to, or None (missing, not a commit)."""
        ids = sorted(set(object_ids) - {ZERO_ID})
        if not ids:
            return {}
        request = "".join(f"{object_id}^{{commit}}\n" for object_id in ids).encode()
        output = self._run(["cat-file", "--batch-check=%(objectname) %(objecttype)"], request)
        peeled: dict[str, str | None] = {}
        for object_id, line in zip(ids, output.stdout.decode().splitlines()):
            name, _, kind = line.partition(" ")
            peeled[object_id] = name if kind == "commit" else None
        return peeled

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        """Check whether commit `ancestor` is reachable from commit `descendant`.

        git uses commit-graph generation numbers when the repository has
        them, so the walk stops early on long histories.
        """
        result = self._run(["merge-base", "--is-ancestor", ancestor, descendant])
        return result.returncode == 0

    def is_fast_forward(self, update: RefUpdate, peeled: Mapping[str, str | None]) -> bool:
        old_commit = peeled.get(update.old)
        new_commit = peeled.get(update.new)
        if old_commit is None or new_commit is None:
            return False
        return self.is_ancestor(old_commit, new_commit)

    def classify_all(self, updates: Sequence[RefUpdate]) -> list[Classification]:
        """Classify each update, asking git whether it is a fast-forward where that matters."""
        needs_ancestry = [update for update in updates if update.needs_ancestry]
        peeled = self.peel_to_commits(
            [update.old for update in needs_ancestry] + [update.new for update in needs_ancestry]
        )
        return [
            classify(update, self.is_fast_forward(update, peeled) if update.needs_ancestry else False)
            for update in updates
        ]

    def is_connected(self, tips: Iterable[str]) -> bool:
        """Check that every object reachable from `tips` is present.

        Objects already reachable from the repository's refs are trusted, as
        git's own connectivity check after a push does.
        """
        request = "".join(f"{tip}\n" for tip in set(tips) - {ZERO_ID}).encode()
        if not request:
            return True
        result = self._run(["rev-list", "--objects", "--stdin", "--not", "--all", "--quiet"], request)
        return result.returncode == 0
