"""Deliver queued CI events to webhook targets, with retries and backoff.

Deliveries are rows in the database, so they survive restarts. A process
claims a delivery by setting a lease with a conditional UPDATE (after a
`SELECT ... FOR UPDATE SKIP LOCKED` on PostgreSQL), so several workers or
servers on one database never send the same attempt twice while the lease
holds, and a crashed process's lease simply lapses.

Each server worker runs one DeliveryWorker thread that polls for due
deliveries. A push also makes the first attempt itself, waiting at most a
short budget, so the pusher can see the CI system's response.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import logging
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, object_session

from gitsrv import __version__
from gitsrv.config import Settings
from gitsrv.db.engine import Database
from gitsrv.db.models import Delivery, DeliveryAttempt, WebhookTarget, as_utc, utcnow
from gitsrv.webhook.addresses import TargetURLError, resolve_target
from gitsrv.webhook.signing import sign
from gitsrv.webhook.transport import post

log = logging.getLogger(__name__)

POLL_INTERVAL = 1.0
CLAIM_BATCH = 20
MAX_BACKOFF = 3600.0
RESPONSE_EXCERPT_CHARS = 1024


def backoff_delay(base: float, attempts: int) -> float:
    """Seconds to wait after the `attempts`-th failure: doubling, capped, with ±20% jitter."""
    delay = min(base * 2 ** (attempts - 1), MAX_BACKOFF)
    return delay * random.uniform(0.8, 1.2)


@dataclass(frozen=True)
class Outcome:
    """The result of one attempt."""

    delivery_id: int
    target_id: int
    event_id: str
    delivered: bool
    status_code: int | None = None
    error: str | None = None
    # The `url` field of a 2xx JSON response, where the CI system shows the build.
    ci_url: str | None = None
    # Whether this failure ended the delivery (too old for another retry).
    given_up: bool = False


def _ci_url(body: bytes, content_type: str) -> str | None:
    if "json" not in content_type and not body.lstrip().startswith(b"{"):
        return None
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    url = payload.get("url") if isinstance(payload, dict) else None
    return url if isinstance(url, str) and url.startswith(("http://", "https://")) else None


class DeliveryWorker:
    """Claims and sends due deliveries; one per server worker process."""

    def __init__(self, database: Database, settings: Settings) -> None:
        self.database = database
        self.settings = settings
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="webhook-delivery", daemon=True)
        self._thread.start()
        log.info("webhook delivery worker started")

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=self.settings.webhook_timeout + 5)
        log.info("webhook delivery worker stopped")

    def wake(self) -> None:
        """Look for due deliveries now instead of at the next poll."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                while not self._stop.is_set() and self.run_once():
                    pass
            except Exception:
                log.exception("webhook delivery loop failed; retrying in %.0f s", POLL_INTERVAL)
            self._wake.wait(POLL_INTERVAL)
            self._wake.clear()

    def run_once(self) -> int:
        """Claim and attempt the due deliveries; return how many were attempted."""
        claimed = self._claim_due()
        for delivery_id in claimed:
            self.attempt(delivery_id)
        return len(claimed)

    def _lease_until(self, now: dt.datetime) -> dt.datetime:
        return now + dt.timedelta(seconds=self.settings.webhook_timeout * 3 + 30)

    def _try_claim(self, session: Session, delivery_id: int, now: dt.datetime) -> bool:
        # The conditional UPDATE is the claim: on SQLite, where FOR UPDATE is
        # ignored, it still lets only one process win.
        result = session.execute(
            update(Delivery)
            .where(
                Delivery.id == delivery_id,
                Delivery.state == "pending",
                or_(Delivery.lease_until.is_(None), Delivery.lease_until < now),
            )
            .values(lease_until=self._lease_until(now))
        )
        return result.rowcount == 1

    def _claim_due(self) -> list[int]:
        now = utcnow()
        with self.database.session() as session:
            candidates = session.scalars(
                select(Delivery.id)
                .join(WebhookTarget, Delivery.target_id == WebhookTarget.id)
                .where(
                    WebhookTarget.enabled.is_(True),
                    Delivery.state == "pending",
                    Delivery.next_attempt_at <= now,
                    or_(Delivery.lease_until.is_(None), Delivery.lease_until < now),
                )
                .order_by(Delivery.next_attempt_at)
                .limit(CLAIM_BATCH)
                .with_for_update(skip_locked=True, of=Delivery)
            ).all()
            claimed = [delivery_id for delivery_id in candidates if self._try_claim(session, delivery_id, now)]
            session.commit()
        return claimed

    def claim(self, delivery_ids: Sequence[int]) -> list[int]:
        """Claim specific deliveries now, whatever their due time; return those claimed."""
        now = utcnow()
        with self.database.session() as session:
            enabled = set(
                session.scalars(
                    select(Delivery.id)
                    .join(WebhookTarget, Delivery.target_id == WebhookTarget.id)
                    .where(Delivery.id.in_(delivery_ids), WebhookTarget.enabled.is_(True))
                )
            )
            claimed = [d for d in delivery_ids if d in enabled and self._try_claim(session, d, now)]
            session.commit()
        return claimed

    def attempt(self, delivery_id: int) -> Outcome | None:
        """Send one claimed delivery, record the attempt, and schedule a retry or give up."""
        with self.database.session() as session:
            delivery = session.get(Delivery, delivery_id)
            if delivery is None:
                return None
            event = delivery.event
            target = delivery.target
            number = delivery.attempts + 1
            headers = {
                "Content-Type": "application/json",
                "User-Agent": f"gitsrv/{__version__}",
                "X-Gitsrv-Event": event.kind,
                "X-Gitsrv-Delivery": event.id,
                "X-Gitsrv-Delivery-Attempt": str(number),
                "X-Gitsrv-Signature-256": sign(target.secret, event.body),
            }
            started = utcnow()
            clock = time.monotonic()
            status_code, error, excerpt, ci_url = self._send(target, event.body, headers)
            duration_ms = int((time.monotonic() - clock) * 1000)

            session.add(
                DeliveryAttempt(
                    delivery_id=delivery.id,
                    number=number,
                    started_at=started,
                    duration_ms=duration_ms,
                    status_code=status_code,
                    error=error,
                    response_excerpt=excerpt,
                )
            )
            delivery.attempts = number
            delivery.lease_until = None
            if error is None:
                delivery.state = "delivered"
                delivery.delivered_at = utcnow()
                delivery.last_error = None
                session.execute(
                    update(WebhookTarget).where(WebhookTarget.id == target.id).values(consecutive_failures=0)
                )
                log.info(
                    "webhook delivered: event=%s target=%d attempt=%d status=%d duration_ms=%d",
                    event.id, target.id, number, status_code, duration_ms,
                )
            else:
                delivery.last_error = error
                self._schedule_retry(delivery, target, event.created_at, number, error)
            given_up = delivery.state == "failed"
            session.commit()
            return Outcome(delivery.id, target.id, event.id, error is None, status_code, error, ci_url, given_up)

    def _schedule_retry(self, delivery: Delivery, target: WebhookTarget, created_at: dt.datetime,
                        number: int, error: str) -> None:
        age = (utcnow() - as_utc(created_at)).total_seconds()
        delay = backoff_delay(self.settings.webhook_backoff, number)
        if age + delay <= self.settings.webhook_max_age:
            delivery.next_attempt_at = utcnow() + dt.timedelta(seconds=delay)
            log.warning(
                "webhook attempt failed, retrying in %.1f s: event=%s target=%d attempt=%d error=%s",
                delay, delivery.event_id, target.id, number, error,
            )
            return
        delivery.state = "failed"
        # Increment in SQL: concurrent attempts to one target must all count.
        session = object_session(delivery)
        session.execute(
            update(WebhookTarget)
            .where(WebhookTarget.id == target.id)
            .values(consecutive_failures=WebhookTarget.consecutive_failures + 1)
        )
        session.refresh(target, ["consecutive_failures"])
        log.error(
            "webhook delivery given up after %d attempts: event=%s target=%d error=%s",
            number, delivery.event_id, target.id, error,
        )
        limit = self.settings.webhook_disable_after
        if limit > 0 and target.consecutive_failures >= limit and target.enabled:
            target.enabled = False
            target.disabled_reason = f"{target.consecutive_failures} events in a row were not delivered; last error: {error}"
            log.error("webhook target disabled: target=%d url=%s reason=%s", target.id, target.url, target.disabled_reason)

    def _send(self, target: WebhookTarget, body: bytes, headers: dict[str, str]):
        """POST to the target; return (status code, error or None on 2xx, response excerpt, CI URL)."""
        try:
            resolved = resolve_target(target.url, target.allow_unsafe_address)
        except TargetURLError as refusal:
            return None, str(refusal), None, None
        try:
            reply = post(resolved, body, headers, self.settings.webhook_timeout)
        except TimeoutError:
            return None, f"timed out after {self.settings.webhook_timeout:g} s", None, None
        except (OSError, http.client.HTTPException) as failure:
            return None, f"request failed: {failure}", None, None
        excerpt = reply.body[:RESPONSE_EXCERPT_CHARS].decode("utf-8", "replace")
        if not 200 <= reply.status < 300:
            return reply.status, f"HTTP {reply.status}", excerpt, None
        return reply.status, None, excerpt, _ci_url(reply.body, reply.content_type)

    def first_attempts(self, delivery_ids: Sequence[int], budget: float) -> tuple[list[Outcome], list[int]]:
        """Attempt new deliveries at once, waiting at most `budget` seconds in all.

        Returns the finished outcomes and the ids still in flight; those
        attempts go on in the background and record their result themselves.
        """
        claimed = self.claim(delivery_ids)
        outcomes: dict[int, Outcome | None] = {}
        threads = []
        for delivery_id in claimed:
            thread = threading.Thread(
                target=lambda d=delivery_id: outcomes.__setitem__(d, self._attempt_logged(d)),
                name=f"webhook-first-attempt-{delivery_id}",
                daemon=True,
            )
            thread.start()
            threads.append((delivery_id, thread))
        deadline = time.monotonic() + budget
        for _delivery_id, thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        finished = [outcome for d, _ in threads if (outcome := outcomes.get(d)) is not None]
        pending = [d for d, thread in threads if thread.is_alive()]
        return finished, pending

    def _attempt_logged(self, delivery_id: int) -> Outcome | None:
        try:
            return self.attempt(delivery_id)
        except Exception:
            log.exception("webhook first attempt failed: delivery=%d", delivery_id)
            return None
