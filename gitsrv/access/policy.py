"""Classify ref updates of a push and decide them against a token's scopes.

Everything here is pure: the caller reads the repository and passes in the
facts (is the update a fast-forward?), so the rules can be tested by table
and shared by the server and the stand-alone git hooks.
"""

from __future__ import annotations

import enum
import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass

from dulwich.refs import check_ref_format

from gitsrv.access.scopes import Scope

ZERO_ID = "0" * 40
TAG_PREFIX = "refs/tags/"


class Classification(str, enum.Enum):
    """Kind of change that one ref update makes to its ref."""

    READ = "read"
    CREATE = "create"
    DELETE = "delete"
    UPDATE = "update"
    FORCE_PUSH = "force-push"

    def __str__(self) -> str:
        return self.value


REQUIRED_SCOPE: dict[Classification, Scope | None] = {
    Classification.READ: None,
    Classification.CREATE: Scope.SOURCE_CREATE,
    Classification.DELETE: Scope.SOURCE_DELETE,
    Classification.UPDATE: Scope.SOURCE_READ_UPDATE,
    Classification.FORCE_PUSH: Scope.SOURCE_DELETE,
}


@dataclass(frozen=True)
class RefUpdate:
    """One command of a push: move `ref` from object `old` to object `new`."""

    old: str
    new: str
    ref: str

    @property
    def is_create(self) -> bool:
        return self.old == ZERO_ID and self.new != ZERO_ID

    @property
    def is_delete(self) -> bool:
        return self.new == ZERO_ID and self.old != ZERO_ID

    @property
    def needs_ancestry(self) -> bool:
        """Whether classify() needs to know if old is an ancestor of new."""
        return (
            self.old != self.new
            and not self.is_create
            and not self.is_delete
            and not self.ref.startswith(TAG_PREFIX)
        )


@dataclass(frozen=True)
class Verdict:
    """The decision on one ref update; `reason` is what the git client prints."""

    classification: Classification
    accepted: bool
    reason: str | None = None


def classify(update: RefUpdate, fast_forward: bool) -> Classification:
    """Classify one ref update.

    Args:
      update: the ref update as the client sent it.
      fast_forward: whether old and new both peel to commits and old is an
        ancestor of new. Only read when `update.needs_ancestry` is true.
    Returns: the classification; any change to an existing tag is a
      force-push, because published tags are immutable.
    """
    if update.old == update.new:
        return Classification.READ
    if update.old == ZERO_ID:
        return Classification.CREATE
    if update.new == ZERO_ID:
        return Classification.DELETE
    if update.ref.startswith(TAG_PREFIX):
        return Classification.FORCE_PUSH
    return Classification.UPDATE if fast_forward else Classification.FORCE_PUSH


def check_ref_name(ref: str) -> str | None:
    """Return why `ref` may not be pushed to, or None when it is valid.

    A ref must be under `refs/` and pass git's check-ref-format rules.
    """
    if not ref.startswith("refs/"):
        return f"invalid ref name {ref!r}: must be under refs/"
    try:
        encoded = ref.encode("utf-8")
    except UnicodeEncodeError:
        return f"invalid ref name {ref!r}"
    if not check_ref_format(encoded):
        return f"invalid ref name {ref!r}"
    return None


def ref_matches(ref: str, patterns: Iterable[str]) -> bool:
    """Check whether `ref` matches one of the glob patterns, where `*` also matches `/`."""
    return any(fnmatch.fnmatchcase(ref, pattern) for pattern in patterns)


def decide(
    update: RefUpdate,
    classification: Classification,
    scopes: Iterable[Scope],
    ref_limits: Iterable[str] = (),
) -> Verdict:
    """Decide one classified ref update against a token's scopes and ref limits.

    Args:
      update: the ref update.
      classification: the result of classify() for it.
      scopes: the scopes the token carries.
      ref_limits: glob patterns of the refs the token may change; empty means
        every ref.
    Returns: the verdict, with the reason the client shows when rejected.
    """
    name_error = check_ref_name(update.ref)
    if name_error:
        return Verdict(classification, False, name_error)

    if classification is Classification.READ:
        return Verdict(classification, True)

    limits = tuple(ref_limits)
    if limits and not ref_matches(update.ref, limits):
        return Verdict(
            classification,
            False,
            f"token may only change refs matching {', '.join(limits)}",
        )

    required = REQUIRED_SCOPE[classification]
    if required is not None and required not in set(scopes):
        return Verdict(classification, False, f"{classification} requires scope {required}")
    return Verdict(classification, True)


def apply_atomic(verdicts: list[Verdict]) -> list[Verdict]:
    """Reject every update of an atomic push when any one of them is rejected."""
    if all(verdict.accepted for verdict in verdicts):
        return verdicts
    return [
        verdict
        if not verdict.accepted
        else Verdict(verdict.classification, False, "atomic push failure")
        for verdict in verdicts
    ]
