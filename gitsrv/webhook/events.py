"""Build CI events and queue one delivery per matching webhook target."""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from gitsrv.access.explain import repo_matches
from gitsrv.access.policy import ref_matches
from gitsrv.db.models import Delivery, Event, WebhookTarget, utcnow

SKIP_MARKER = re.compile(r"\[(skip ci|ci skip)\]", re.IGNORECASE)
SKIP_PUSH_OPTION = "ci.skip"


@dataclass(frozen=True)
class AcceptedRef:
    """One accepted ref update as the event reports it."""

    ref: str
    before: str
    after: str
    classification: str
    # For created or updated branches: the newest new commits, and how many there are.
    commits: list[dict] | None = None
    total_commits: int | None = None

    def as_json(self) -> dict:
        payload: dict = {
            "ref": self.ref,
            "before": self.before,
            "after": self.after,
            "classification": self.classification,
        }
        if self.commits is not None:
            payload["commits"] = self.commits
            payload["total_commits"] = self.total_commits
        return payload


@dataclass
class PushEventInput:
    repository: str
    refs: Sequence[AcceptedRef]
    token_id: int
    token_name: str
    push_options: Sequence[str] = ()
    # Message of the commit each accepted ref's new value peels to.
    tip_messages: dict[str, str | None] = field(default_factory=dict)


def skip_reason(event: PushEventInput) -> str | None:
    """Return why a push should not trigger CI, or None.

    A push is skipped with `git push -o ci.skip`, or when the new tip commit
    of every accepted ref carries `[skip ci]` or `[ci skip]`.
    """
    if SKIP_PUSH_OPTION in event.push_options:
        return "push option ci.skip"
    messages = [event.tip_messages.get(ref.ref) for ref in event.refs]
    if messages and all(message is not None and SKIP_MARKER.search(message) for message in messages):
        return "[skip ci] in every new tip commit"
    return None


def format_timestamp(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def encode_body(payload: dict) -> bytes:
    """Serialize an event; these exact bytes are stored, signed and sent."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode("utf-8")


def matching_targets(session: Session, repository: str, refs: Sequence[str]) -> list[WebhookTarget]:
    """Targets whose filters match the repository and at least one of the refs, disabled ones included."""
    targets = []
    for target in session.scalars(select(WebhookTarget).order_by(WebhookTarget.id)):
        if not repo_matches(repository, json.loads(target.repo_filters)):
            continue
        ref_filters = json.loads(target.ref_filters)
        if ref_filters and not any(ref_matches(ref, ref_filters) for ref in refs):
            continue
        targets.append(target)
    return targets


def queue_deliveries(
    session: Session,
    event: Event,
    refs: Sequence[str],
    first_attempt_at: dt.datetime,
    target_ids: Sequence[int] | None = None,
) -> list[Delivery]:
    """Add one pending delivery of `event` per matching target.

    Disabled targets get one too, so enabling them again delivers it.
    `target_ids`, when given, are the matching targets the caller already
    looked up.
    """
    if target_ids is None:
        target_ids = [target.id for target in matching_targets(session, event.repository, refs)]
    deliveries = []
    for target_id in target_ids:
        delivery = Delivery(event_id=event.id, target_id=target_id, next_attempt_at=first_attempt_at)
        session.add(delivery)
        deliveries.append(delivery)
    session.flush()
    return deliveries


def record_push_event(
    session: Session,
    push_id: int,
    event_input: PushEventInput,
    first_attempt_at: dt.datetime,
    target_ids: Sequence[int] | None = None,
) -> tuple[Event, list[Delivery]]:
    """Add a push event and, unless it is skipped, its deliveries to the session's transaction.

    `target_ids` are passed on to queue_deliveries().
    """
    now = utcnow()
    event_id = str(uuid.uuid4())
    payload = {
        "id": event_id,
        "event": "push",
        "repository": event_input.repository,
        "refs": [ref.as_json() for ref in event_input.refs],
        "token": {"id": event_input.token_id, "name": event_input.token_name},
        "push_options": list(event_input.push_options),
        "timestamp": format_timestamp(now),
    }
    reason = skip_reason(event_input)
    event = Event(
        id=event_id,
        kind="push",
        repository=event_input.repository,
        push_id=push_id,
        body=encode_body(payload),
        created_at=now,
        skip_reason=reason,
    )
    session.add(event)
    session.flush()
    if reason is not None:
        return event, []
    return event, queue_deliveries(
        session, event, [ref.ref for ref in event_input.refs], first_attempt_at, target_ids
    )


def record_trigger_event(
    session: Session, repository: str, ref: str, commit: str, token_id: int, token_name: str
) -> tuple[Event, list[Delivery]]:
    """Add a `trigger` event for a ref's current tip, asked for through the CI API."""
    now = utcnow()
    event_id = str(uuid.uuid4())
    payload = {
        "id": event_id,
        "event": "trigger",
        "repository": repository,
        "ref": ref,
        "after": commit,
        "token": {"id": token_id, "name": token_name},
        "timestamp": format_timestamp(now),
    }
    event = Event(id=event_id, kind="trigger", repository=repository, body=encode_body(payload), created_at=now)
    session.add(event)
    session.flush()
    return event, queue_deliveries(session, event, [ref], now)
