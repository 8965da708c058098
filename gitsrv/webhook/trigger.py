"""Turn an accepted push into a CI event and report the first delivery to the pusher."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from gitsrv.access.policy import ZERO_ID, Classification
from gitsrv.db.models import Delivery, Event
from gitsrv.git.history import new_commits, tip_messages
from gitsrv.webhook.delivery import DeliveryWorker
from gitsrv.webhook.events import AcceptedRef

log = logging.getLogger(__name__)

BRANCH_PREFIX = "refs/heads/"
LISTS_COMMITS = (Classification.CREATE, Classification.UPDATE, Classification.FORCE_PUSH)


def accepted_refs(
    repo: Path,
    updates: Sequence[tuple[str, str, str, Classification]],
    refs_before: Mapping[str, str],
    max_commits: int,
) -> list[AcceptedRef]:
    """Describe accepted ref updates, with new commits for created or updated branches.

    A created branch's new commits are those reachable from no ref that
    existed before the push. An updated branch's new commits are those not
    reachable from its old value.
    """
    other_tips = set(refs_before.values())
    described = []
    for ref, old, new, classification in updates:
        if classification in LISTS_COMMITS and ref.startswith(BRANCH_PREFIX):
            exclude = [old] if old != ZERO_ID else other_tips
            commits, total = new_commits(repo, new, exclude, max_commits)
            described.append(
                AcceptedRef(ref, old, new, str(classification), [c.as_json() for c in commits], total)
            )
        else:
            described.append(AcceptedRef(ref, old, new, str(classification)))
    return described


def tip_messages_of(repo: Path, refs: Sequence[AcceptedRef]) -> dict[str, str | None]:
    """Map each ref to the message of its new tip commit (None for deletions and non-commits)."""
    live = [ref for ref in refs if ref.after != ZERO_ID]
    by_object = tip_messages(repo, [ref.after for ref in live])
    messages: dict[str, str | None] = {ref.ref: None for ref in refs}
    for ref in live:
        messages[ref.ref] = by_object.get(ref.after)
    return messages


def report_first_attempts(
    worker: DeliveryWorker | None, event: Event, deliveries: Sequence[Delivery], budget: float
) -> list[str]:
    """Make the first delivery attempts within `budget` seconds; return lines for the pusher."""
    if event.skip_reason is not None:
        return [f"CI skipped: event {event.id} recorded but not delivered ({event.skip_reason})"]
    if not deliveries:
        return []
    if worker is None:
        return [f"CI trigger queued: event {event.id} for {len(deliveries)} webhook target(s)"]

    outcomes, in_flight = worker.first_attempts([d.id for d in deliveries], budget)
    lines = []
    for outcome in outcomes:
        if outcome.delivered and outcome.ci_url:
            lines.append(f"CI triggered: {outcome.ci_url}")
        elif outcome.delivered:
            lines.append(f"CI triggered: event {event.id} delivered to webhook target {outcome.target_id}")
        elif outcome.given_up:
            lines.append(
                f"CI trigger failed: event {event.id} to webhook target {outcome.target_id} "
                f"failed ({outcome.error}) and is not retried"
            )
        else:
            lines.append(
                f"CI trigger queued: event {event.id} to webhook target {outcome.target_id} "
                f"failed ({outcome.error}) and will be retried"
            )
    attempted = {outcome.delivery_id for outcome in outcomes} | set(in_flight)
    if in_flight:
        lines.append(
            f"CI trigger queued: event {event.id} is still being delivered to {len(in_flight)} "
            f"webhook target(s) in the background"
        )
    waiting = [d for d in deliveries if d.id not in attempted]
    if waiting:
        lines.append(f"CI trigger queued: event {event.id} for {len(waiting)} webhook target(s)")
    return lines
