"""Register, enable, disable and remove webhook targets; queue redeliveries."""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from gitsrv.db.models import Delivery, DeliveryAttempt, Event, WebhookTarget, utcnow
from gitsrv.webhook.addresses import resolve_target
from gitsrv.webhook.events import matching_targets
from gitsrv.webhook.signing import generate_secret


def add_target(
    session: Session,
    url: str,
    secret: str | None = None,
    repo_filters: Sequence[str] = (),
    ref_filters: Sequence[str] = (),
    allow_unsafe_address: bool = False,
) -> WebhookTarget:
    """Check the URL's addresses and store a new target.

    Raises addresses.TargetURLError for an invalid or refused URL.
    """
    resolve_target(url, allow_unsafe_address)
    target = WebhookTarget(
        url=url,
        secret=secret or generate_secret(),
        repo_filters=json.dumps(list(repo_filters)),
        ref_filters=json.dumps(list(ref_filters)),
        allow_unsafe_address=allow_unsafe_address,
    )
    session.add(target)
    session.flush()
    return target


def enable_target(session: Session, target: WebhookTarget) -> int:
    """Enable a target and make its pending deliveries due now; return how many."""
    target.enabled = True
    target.consecutive_failures = 0
    target.disabled_reason = None
    result = session.execute(
        update(Delivery)
        .where(Delivery.target_id == target.id, Delivery.state == "pending")
        .values(next_attempt_at=utcnow())
    )
    return result.rowcount


def disable_target(session: Session, target: WebhookTarget, reason: str) -> None:
    target.enabled = False
    target.disabled_reason = reason


def remove_target(session: Session, target: WebhookTarget) -> None:
    """Delete a target with its deliveries and their attempts."""
    delivery_ids = select(Delivery.id).where(Delivery.target_id == target.id)
    session.execute(delete(DeliveryAttempt).where(DeliveryAttempt.delivery_id.in_(delivery_ids)))
    session.execute(delete(Delivery).where(Delivery.target_id == target.id))
    session.delete(target)


def redeliver(session: Session, event: Event, target_id: int | None = None) -> list[Delivery]:
    """Queue an event again; attempt numbers continue from the earlier attempts.

    Targets that had no delivery of the event (added later, or the event was
    skipped) get one if their filters match.
    """
    deliveries = {d.target_id: d for d in session.scalars(select(Delivery).where(Delivery.event_id == event.id))}
    payload = json.loads(event.body)
    refs = [ref["ref"] for ref in payload.get("refs", [])] or [payload.get("ref", "")]
    for target in matching_targets(session, event.repository, refs):
        if target.id not in deliveries:
            delivery = Delivery(event_id=event.id, target_id=target.id)
            session.add(delivery)
            deliveries[target.id] = delivery
    now = utcnow()
    queued = []
    for delivery_target, delivery in deliveries.items():
        if target_id is not None and delivery_target != target_id:
            continue
        delivery.state = "pending"
        delivery.next_attempt_at = now
        delivery.lease_until = None
        queued.append(delivery)
    session.flush()
    return queued
