"""Apply the push policy from stock git hooks (pre-receive, update, post-receive).

Operators who serve repositories with `git http-backend` or another git
server install the programs in hooks/, which call the main_* functions here.
The decisions come from gitsrv.access.policy, as in the gitsrv server. The
web server describes the pushing token in environment variables, which git
passes on to the hooks:

  GITSRV_TOKEN_SCOPES  Scope names separated by spaces or commas. Unset means no scopes.
  GITSRV_TOKEN_ID      Token id shown in rejection messages (optional).
  GITSRV_REF_LIMITS    Glob patterns, separated by spaces, of the refs the token
                       may change. `*` also matches `/`. Unset or empty means every ref.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TextIO

from gitsrv.access.policy import Classification, RefUpdate, Verdict, decide
from gitsrv.access.scopes import InvalidScopeError, Scope, parse_scopes
from gitsrv.git.inspect import ObjectInspector

SCOPES_VARIABLE = "GITSRV_TOKEN_SCOPES"
TOKEN_ID_VARIABLE = "GITSRV_TOKEN_ID"
REF_LIMITS_VARIABLE = "GITSRV_REF_LIMITS"

# git 2.11 and later sets these for the pre-receive hook, while the pushed
# objects sit in a quarantine directory (the update hook runs after git has
# moved them into the repository). ObjectInspector drops inherited GIT_*
# variables, so they are passed to it explicitly.
QUARANTINE_VARIABLES = (
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_QUARANTINE_PATH",
)

# The policy and the gitsrv server support SHA-1 repositories only.
OBJECT_ID_PATTERN = re.compile(r"[0-9a-f]{40}")
MESSAGE_PREFIX = "gitsrv: "


class HookInputError(ValueError):
    """Hook input (stdin lines or arguments) that does not match git's hook input format."""


@dataclass(frozen=True)
class TokenGrant:
    """The scopes, ref limits and id that the web server set for the pushing token."""

    scopes: frozenset[Scope]
    ref_limits: tuple[str, ...]
    token_id: str | None
    scopes_variable_set: bool


def read_grant(environ: Mapping[str, str]) -> TokenGrant:
    """Read the token's scopes, ref limits and id from the environment.

    Raises InvalidScopeError when GITSRV_TOKEN_SCOPES contains an unknown scope name.
    """
    scope_text = environ.get(SCOPES_VARIABLE)
    scopes = parse_scopes([scope_text]) if scope_text else frozenset()
    ref_limits = tuple(environ.get(REF_LIMITS_VARIABLE, "").split())
    return TokenGrant(scopes, ref_limits, read_token_id(environ), scope_text is not None)


def read_token_id(environ: Mapping[str, str]) -> str | None:
    """Return GITSRV_TOKEN_ID, or None when it is unset or blank."""
    return environ.get(TOKEN_ID_VARIABLE, "").strip() or None


def parse_update(old: str, new: str, ref: str) -> RefUpdate:
    """Build a RefUpdate from the old id, new id and ref name that git passes to a hook."""
    for object_id in (old, new):
        if not OBJECT_ID_PATTERN.fullmatch(object_id):
            raise HookInputError(
                f"invalid object id {object_id!r} for {ref}: expected 40 hex digits "
                "(SHA-256 repositories are not supported)"
            )
    if not ref:
        raise HookInputError("missing ref name")
    return RefUpdate(old=old, new=new, ref=ref)


def parse_receive_input(stream: BinaryIO) -> list[RefUpdate]:
    """Parse the `<old> <new> <ref>` lines git writes to pre-receive and post-receive."""
    updates = []
    for raw_line in stream:
        line = raw_line.decode("utf-8", "surrogateescape").rstrip("\n")
        if not line:
            continue
        fields = line.split(" ", 2)
        if len(fields) != 3:
            raise HookInputError(f"invalid input line {line!r}: expected '<old> <new> <ref>'")
        old, new, ref = fields
        updates.append(parse_update(old, new, ref))
    return updates


def create_inspector(environ: Mapping[str, str]) -> ObjectInspector:
    """Create an ObjectInspector for the hook's repository that also reads quarantined objects.

    git runs hooks with the repository (bare) or the work tree root as the
    current directory and GIT_DIR set, possibly to a relative path.
    """
    git_dir = Path(environ.get("GIT_DIR", ".")).resolve()
    passed = {name: environ[name] for name in QUARANTINE_VARIABLES if environ.get(name)}
    if "GIT_OBJECT_DIRECTORY" in passed:
        # The inspector runs git inside git_dir, which differs from the hook's
        # current directory in a non-bare repository.
        passed["GIT_OBJECT_DIRECTORY"] = str(Path(passed["GIT_OBJECT_DIRECTORY"]).resolve())
    return ObjectInspector(git_dir, passed)


def decide_updates(
    updates: Sequence[RefUpdate], inspector: ObjectInspector, grant: TokenGrant
) -> list[Verdict]:
    """Classify and decide each update against the token's scopes and ref limits."""
    classifications = inspector.classify_all(updates)
    return [
        decide(update, classification, grant.scopes, grant.ref_limits)
        for update, classification in zip(updates, classifications)
    ]


def format_rejection(ref: str, reason: str, token_id: str | None) -> str:
    """Format the line git shows the pusher as `remote: gitsrv: rejected <ref>: <reason>`."""
    suffix = f" (token {token_id})" if token_id else ""
    return f"{MESSAGE_PREFIX}rejected {ref}: {reason}{suffix}"


def _print(stderr: TextIO, message: str) -> None:
    print(f"{MESSAGE_PREFIX}{message}", file=stderr)


def _check_updates(
    updates: Sequence[RefUpdate], environ: Mapping[str, str], stderr: TextIO
) -> list[Verdict] | None:
    """Decide the updates and print one line per rejected ref.

    Returns the verdicts, or None when the scope variable is invalid or git
    failed. In that case every update is rejected and the error is printed.
    """
    token_id = read_token_id(environ)
    try:
        grant = read_grant(environ)
    except InvalidScopeError as error:
        _print(stderr, f"{SCOPES_VARIABLE} is invalid: {error}")
        for update in updates:
            print(format_rejection(update.ref, f"invalid {SCOPES_VARIABLE} on the server", token_id), file=stderr)
        return None

    try:
        verdicts = decide_updates(updates, create_inspector(environ), grant)
    except OSError as error:
        _print(stderr, f"running git failed: {error}")
        for update in updates:
            print(format_rejection(update.ref, "the server could not inspect the pushed objects", token_id), file=stderr)
        return None

    rejected = [(update, verdict) for update, verdict in zip(updates, verdicts) if not verdict.accepted]
    for update, verdict in rejected:
        print(format_rejection(update.ref, verdict.reason or "rejected", token_id), file=stderr)
    if rejected and not grant.scopes_variable_set:
        _print(stderr, f"{SCOPES_VARIABLE} is not set on the server, so the push carries no scopes")
    return verdicts


def main_pre_receive(
    stdin: BinaryIO | None = None,
    stderr: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Run the pre-receive hook: return 1, which rejects the whole push, if any ref is rejected."""
    stdin = stdin if stdin is not None else sys.stdin.buffer
    stderr = stderr if stderr is not None else sys.stderr
    environ = environ if environ is not None else os.environ

    try:
        updates = parse_receive_input(stdin)
    except HookInputError as error:
        _print(stderr, f"pre-receive: {error}")
        return 1
    if not updates:
        return 0

    verdicts = _check_updates(updates, environ, stderr)
    if verdicts is None:
        return 1
    rejected_count = sum(not verdict.accepted for verdict in verdicts)
    if rejected_count == 0:
        return 0
    if rejected_count < len(updates):
        _print(
            stderr,
            f"{rejected_count} of {len(updates)} ref updates rejected, "
            "so the pre-receive hook rejects the whole push",
        )
    return 1


def main_update(
    argv: Sequence[str],
    stderr: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Run the update hook for one ref.

    `argv` is `<ref> <old> <new>`, without the program name. Returns 1, which
    rejects only this ref, when the ref update is not allowed.
    """
    stderr = stderr if stderr is not None else sys.stderr
    environ = environ if environ is not None else os.environ

    if len(argv) != 3:
        _print(stderr, f"update: expected 3 arguments '<ref> <old> <new>', got {len(argv)}")
        return 1
    ref, old, new = argv
    try:
        update = parse_update(old, new, ref)
    except HookInputError as error:
        _print(stderr, f"update: {error}")
        return 1

    verdicts = _check_updates([update], environ, stderr)
    if verdicts is None or not verdicts[0].accepted:
        return 1
    return 0


def format_accepted(update: RefUpdate, classification: Classification) -> str:
    """Format the post-receive log line `gitsrv: <classification> <ref> <old>..<new>`."""
    return f"{MESSAGE_PREFIX}{classification} {update.ref} {update.old}..{update.new}"


def main_post_receive(
    stdin: BinaryIO | None = None,
    stderr: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Run the post-receive hook: print one line per updated ref and return 0.

    git passes only the refs it updated. The refs have already changed, so
    this hook returns 0 even when it cannot read its input or run git.
    """
    stdin = stdin if stdin is not None else sys.stdin.buffer
    stderr = stderr if stderr is not None else sys.stderr
    environ = environ if environ is not None else os.environ

    try:
        updates = parse_receive_input(stdin)
    except HookInputError as error:
        _print(stderr, f"post-receive: {error}")
        return 0
    if not updates:
        return 0

    try:
        classifications = create_inspector(environ).classify_all(updates)
    except OSError as error:
        _print(stderr, f"post-receive: running git failed: {error}")
        return 0
    for update, classification in zip(updates, classifications):
        print(format_accepted(update, classification), file=stderr)
    return 0
