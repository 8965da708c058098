"""Build CI events and queue one delivery per enabled webhook target."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from gitsrv.db.models import Delivery, Event, WebhookTarget, utcnow


@dataclass(frozen=True)
class AcceptedRef:
    ref: str
    before: str
    after: str
    classification: str


def push_event_body(
    event_id: str,
    repository: str,
    refs: Sequence[AcceptedRef],
    token_id: int,
    token_name: str,
    push_options: Sequence[str],
    timestamp: str,
) -> bytes:
    """Serialize a push event; these exact bytes are signed and sent."""
    payload = {
        "id": event_id,
        "event": "push",
        "repository": repository,
        "refs": [
            {
                "ref": ref.ref,
                "before": ref.before,
                "after": ref.after,
                "classification": ref.classification,
            }
            for ref in refs
        ],
        "token": {"id": token_id, "name": token_name},
        "push_options": list(push_options),
        "timestamp": timestamp,
    }
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode("utf-8")


def queue_push_event(
    session: Session,
    push_id: int,
    repository: str,
    refs: Sequence[AcceptedRef],
    token_id: int,
    token_name: str,
    push_options: Sequence[str],
) -> tuple[Event, int]:
    """Add a push event and its deliveries to the session's transaction.

    Returns the event and the number of targets it will be delivered to.
    """
    now = utcnow()
    event_id = str(uuid.uuid4())
    timestamp = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    body = push_event_body(event_id, repository, refs, token_id, token_name, push_options, timestamp)
    event = Event(id=event_id, kind="push", repository=repository, push_id=push_id, body=body, created_at=now)
    session.add(event)
    targets = session.scalars(select(WebhookTarget).where(WebhookTarget.enabled.is_(True))).all()
    for target in targets:
        session.add(Delivery(event_id=event_id, target_id=target.id, next_attempt_at=now))
    return event, len(targets)
