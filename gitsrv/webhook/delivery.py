"""Deliver queued CI events to webhook targets, with retries and backoff.

Each server worker runs one DeliveryWorker thread. Deliveries are rows in
the database, so they survive restarts; a worker claims a due delivery by
setting a lease with a conditional UPDATE, so two workers (or two servers
on one database) never send the same attempt twice while the lease holds,
and a crashed worker's lease simply lapses.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
import time
import urllib.error
import urllib.request

from sqlalchemy import or_, select, update

from gitsrv import __version__
from gitsrv.config import Settings
from gitsrv.db.engine import Database
from gitsrv.db.models import Delivery, DeliveryAttempt, utcnow
from gitsrv.webhook.signing import sign

log = logging.getLogger(__name__)

POLL_INTERVAL = 1.0
CLAIM_BATCH = 20
MAX_BACKOFF = 3600.0
RESPONSE_EXCERPT_BYTES = 1024


def backoff_delay(base: float, attempts: int) -> float:
    """Seconds to wait after the `attempts`-th failure: doubling, capped, with ±20% jitter."""
    delay = min(base * 2 ** (attempts - 1), MAX_BACKOFF)
    return delay * random.uniform(0.8, 1.2)


class DeliveryWorker:
    """A background thread that sends due deliveries of this database."""

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
        claimed = self._claim()
        for delivery_id in claimed:
            self._attempt(delivery_id)
        return len(claimed)

    def _claim(self) -> list[int]:
        now = utcnow()
        lease_until = now + dt.timedelta(seconds=self.settings.webhook_timeout * 3 + 30)
        claimed = []
        with self.database.session() as session:
            candidates = session.scalars(
                select(Delivery.id)
                .where(
                    Delivery.state == "pending",
                    Delivery.next_attempt_at <= now,
                    or_(Delivery.lease_until.is_(None), Delivery.lease_until < now),
                )
                .order_by(Delivery.next_attempt_at)
                .limit(CLAIM_BATCH)
                .with_for_update(skip_locked=True)
            ).all()
            for delivery_id in candidates:
                # The conditional UPDATE is the claim: on SQLite, where
                # FOR UPDATE is ignored, it still lets only one worker win.
                result = session.execute(
                    update(Delivery)
                    .where(
                        Delivery.id == delivery_id,
                        Delivery.state == "pending",
                        or_(Delivery.lease_until.is_(None), Delivery.lease_until < now),
                    )
                    .values(lease_until=lease_until)
                )
                if result.rowcount == 1:
                    claimed.append(delivery_id)
            session.commit()
        return claimed

    def _attempt(self, delivery_id: int) -> None:
        with self.database.session() as session:
            delivery = session.get(Delivery, delivery_id)
            if delivery is None:
                return
            event = delivery.event
            target = delivery.target
            number = delivery.attempts + 1
            request = urllib.request.Request(
                target.url,
                data=event.body,
                method="POST",
                headers={
                    "Content-Type": "application/json",
                    "User-Agent": f"gitsrv/{__version__}",
                    "X-Gitsrv-Event": event.kind,
                    "X-Gitsrv-Delivery": event.id,
                    "X-Gitsrv-Delivery-Attempt": str(number),
                    "X-Gitsrv-Signature-256": sign(target.secret, event.body),
                },
            )
            started = utcnow()
            clock = time.monotonic()
            status_code, error, excerpt = _send(request, self.settings.webhook_timeout)
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
                log.info(
                    "webhook delivered: event=%s target=%d attempt=%d status=%d duration_ms=%d",
                    event.id, target.id, number, status_code, duration_ms,
                )
            else:
                delivery.last_error = error
                age = (utcnow() - _aware(event.created_at)).total_seconds()
                delay = backoff_delay(self.settings.webhook_backoff, number)
                if age + delay > self.settings.webhook_max_age:
                    delivery.state = "failed"
                    log.error(
                        "webhook delivery given up: event=%s target=%d attempts=%d error=%s",
                        event.id, target.id, number, error,
                    )
                else:
                    delivery.next_attempt_at = utcnow() + dt.timedelta(seconds=delay)
                    log.warning(
                        "webhook attempt failed, retrying in %.1f s: event=%s target=%d attempt=%d error=%s",
                        delay, event.id, target.id, number, error,
                    )
            session.commit()


def _aware(moment: dt.datetime) -> dt.datetime:
    # SQLite returns naive datetimes; every stored time is UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def _send(request: urllib.request.Request, timeout: float) -> tuple[int | None, str | None, str | None]:
    """POST the request; return (status code, error or None on 2xx, response excerpt)."""
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            excerpt = response.read(RESPONSE_EXCERPT_BYTES).decode("utf-8", "replace")
            return response.status, None, excerpt
    except urllib.error.HTTPError as error:
        excerpt = error.read(RESPONSE_EXCERPT_BYTES).decode("utf-8", "replace")
        return error.code, f"HTTP {error.code}", excerpt
    except (urllib.error.URLError, OSError, TimeoutError) as error:
        reason = getattr(error, "reason", error)
        return None, f"request failed: {reason}", None
