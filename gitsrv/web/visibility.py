"""Look up the repository a URL path names, as the presenting token may see it."""

from __future__ import annotations

from pathlib import Path

from gitsrv.access.explain import repo_matches
from gitsrv.auth.store import Identity
from gitsrv.git.repos import (
    InvalidRepoPathError,
    Repository,
    find_repository,
    normalize_name,
)


def visible_repository(repos_dir: Path, identity: Identity, path: str) -> Repository | None:
    """Return the repository at `path`, or None when it must look absent to this token.

    An invalid path, a repository outside the token's repo limits and a
    missing repository all give None, so callers answer 404 alike and a
    token cannot tell them apart.
    """
    try:
        name = normalize_name(path)
    except InvalidRepoPathError:
        return None
    if not repo_matches(name, identity.repo_limits):
        return None
    return find_repository(repos_dir, name)
