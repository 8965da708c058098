"""Explain what a token may do on a repository and ref, and why not."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass

from gitsrv.access.policy import (
    REQUIRED_SCOPE,
    Classification,
    check_ref_name,
    ref_matches,
)
from gitsrv.access.scopes import FETCH_SCOPES, Scope

OPERATIONS = ("read", "update", "create", "delete", "force-push")


@dataclass(frozen=True)
class Permission:
    operation: str
    allowed: bool
    reason: str | None = None


def repo_matches(repo: str, patterns: Iterable[str]) -> bool:
    """Check whether a repository name matches the token's repo limits; no limits match all names.

    Patterns are globs on the name without `.git`; `*` also matches `/`.
    """
    limits = tuple(patterns)
    return not limits or any(fnmatch.fnmatchcase(repo, pattern) for pattern in limits)


def explain(
    scopes: Iterable[Scope],
    repo_limits: Iterable[str],
    ref_limits: Iterable[str],
    repo: str,
    ref: str | None = None,
) -> list[Permission]:
    """List, for each operation, whether the token may do it on `repo` (and `ref`)."""
    granted = set(scopes)
    repo_limits = tuple(repo_limits)
    ref_limits = tuple(ref_limits)
    if not repo_matches(repo, repo_limits):
        reason = f"repository {repo} is outside the token's repo limits {', '.join(repo_limits)}"
        return [Permission(operation, False, reason) for operation in OPERATIONS]

    permissions = []
    if granted & FETCH_SCOPES:
        permissions.append(Permission("read", True))
    else:
        permissions.append(Permission("read", False, f"read requires scope {Scope.SOURCE_READ}"))

    ref_error = check_ref_name(ref) if ref is not None else None
    for operation in OPERATIONS[1:]:
        required = REQUIRED_SCOPE[Classification(operation)]
        # The same order of checks as policy.decide(), so the reasons agree.
        if ref_error:
            permissions.append(Permission(operation, False, ref_error))
        elif ref is not None and ref_limits and not ref_matches(ref, ref_limits):
            permissions.append(
                Permission(operation, False, f"token may only change refs matching {', '.join(ref_limits)}")
            )
        elif required not in granted:
            permissions.append(Permission(operation, False, f"{operation} requires scope {required}"))
        else:
            permissions.append(Permission(operation, True))
    return permissions
