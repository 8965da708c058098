"""Read refs and apply ref updates with compare-and-swap through git update-ref."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from gitsrv.access.policy import ZERO_ID, RefUpdate
from gitsrv.git.command import run_git


def read_refs(repo: Path) -> list[tuple[str, str]]:
    """List (object id, ref name) of every ref under refs/, sorted by name."""
    output = run_git(repo, ["for-each-ref", "--format=%(objectname) %(refname)"]).stdout
    refs = []
    for line in output.decode("utf-8", "surrogateescape").splitlines():
        object_id, _, name = line.partition(" ")
        refs.append((object_id, name))
    return refs


def current_value(repo: Path, ref: str) -> str:
    """Return the object id `ref` points at, or the zero id when it does not exist."""
    result = run_git(repo, ["rev-parse", "--verify", "--quiet", ref], check=False)
    value = result.stdout.decode().strip()
    return value if result.returncode == 0 and value else ZERO_ID


def _transaction(updates: Sequence[RefUpdate]) -> bytes:
    lines = ["start"]
    for update in updates:
        if update.old == update.new:
            lines.append(f"verify {update.ref} {update.old}")
        elif update.new == ZERO_ID:
            lines.append(f"delete {update.ref} {update.old}")
        else:
            # An old value of zeros makes git require that the ref does not exist.
            lines.append(f"update {update.ref} {update.new} {update.old}")
    lines += ["prepare", "commit", ""]
    return "\n".join(lines).encode()


def update_refs(repo: Path, updates: Sequence[RefUpdate]) -> str | None:
    """Apply all updates in one transaction; return None, or git's error message.

    Every update is a compare-and-swap on its old value: if any ref no longer
    has it, nothing is changed.
    """
    if not updates:
        return None
    result = run_git(repo, ["update-ref", "--stdin"], input=_transaction(updates), check=False)
    if result.returncode == 0:
        return None
    return result.stderr.decode("utf-8", "replace").strip().removeprefix("fatal: ")


def stale_reason(repo: Path, update: RefUpdate) -> str | None:
    """Explain why a compare-and-swap on `update` fails, or None if the ref still has its old value."""
    now = current_value(repo, update.ref)
    if now == update.old:
        return None
    if now == ZERO_ID:
        return f"stale info: ref does not exist, push expected {update.old[:12]}"
    if update.old == ZERO_ID:
        return f"stale info: ref already exists at {now[:12]}"
    return f"stale info: ref is at {now[:12]}, push expected {update.old[:12]}"
