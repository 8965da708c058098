"""Read commit details for CI events: new commits of a ref update, tip messages."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gitsrv.access.policy import ZERO_ID
from gitsrv.git.command import run_git

FIELD = "\x00"
RECORD = "\x1e"
# git expands %x00 and %x1e to the separators; a NUL cannot be passed in an argument.
LOG_FORMAT = "%x00".join(["%H", "%an", "%ae", "%aI", "%cn", "%ce", "%cI", "%B"]) + "%x1e"


@dataclass(frozen=True)
class CommitInfo:
    id: str
    author_name: str
    author_email: str
    author_date: str
    committer_name: str
    committer_email: str
    committer_date: str
    message: str

    def as_json(self) -> dict:
        return {
            "id": self.id,
            "author": {"name": self.author_name, "email": self.author_email, "date": self.author_date},
            "committer": {"name": self.committer_name, "email": self.committer_email, "date": self.committer_date},
            "timestamp": self.committer_date,
            "message": self.message,
        }


def _git(repo: Path, args: list[str], input: str) -> str:
    return run_git(repo, args, input=input.encode()).stdout.decode("utf-8", "replace")


def new_commits(repo: Path, new: str, exclude: Iterable[str], limit: int) -> tuple[list[CommitInfo], int]:
    """Return up to `limit` commits reachable from `new` but from none of `exclude`, newest first, and their true count."""
    revisions = new + "\n" + "".join(f"^{object_id}\n" for object_id in set(exclude) - {ZERO_ID, new})
    total = int(_git(repo, ["rev-list", "--count", "--stdin"], revisions).strip() or 0)
    if total == 0 or limit <= 0:
        return [], total
    output = _git(repo, ["log", f"--max-count={limit}", f"--format={LOG_FORMAT}", "--stdin"], revisions)
    commits = []
    for record in output.split(RECORD):
        record = record.lstrip("\n")
        if not record:
            continue
        fields = record.split(FIELD)
        commits.append(CommitInfo(*fields[:7], fields[7].rstrip("\n")))
    return commits, total


def tip_messages(repo: Path, object_ids: Sequence[str]) -> dict[str, str | None]:
    """Map each object id to the message of the commit it peels to (None if it is not a commit)."""
    ids = list(dict.fromkeys(object_ids))
    if not ids:
        return {}
    request = "".join(f"{object_id}^{{commit}}\n" for object_id in ids)
    data = run_git(repo, ["cat-file", "--batch"], input=request.encode()).stdout
    messages: dict[str, str | None] = {}
    position = 0
    for object_id in ids:
        end = data.index(b"\n", position)
        header = data[position:end].decode()
        position = end + 1
        parts = header.split()
        if len(parts) != 3 or parts[1] != "commit":
            messages[object_id] = None
            continue
        size = int(parts[2])
        content = data[position : position + size]
        position += size + 1
        _headers, _, message = content.partition(b"\n\n")
        messages[object_id] = message.decode("utf-8", "replace")
    return messages
