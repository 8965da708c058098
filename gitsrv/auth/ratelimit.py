"""Limit failed authentications per client address.

Failures are rows in the database, so every server process counts the
failures seen by all of them. The block itself is remembered in process:
checking it costs no database query, and a process that has not yet
blocked an address does so at that address's next failure there.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time

from sqlalchemy import delete, func, select

from gitsrv.db.engine import Database
from gitsrv.db.models import AuthFailure, utcnow

log = logging.getLogger(__name__)


class FailureLimiter:
    """Respond 429 to an address after `limit` failed authentications within `window` seconds."""

    def __init__(self, database: Database, limit: int, window: float) -> None:
        self.database = database
        self.limit = limit
        self.window = window
        self._blocked_until: dict[str, float] = {}
        self._lock = threading.Lock()

    def retry_after(self, address: str) -> int | None:
        """Seconds until `address` may try again, or None when it is not blocked."""
        if self.limit <= 0:
            return None
        with self._lock:
            until = self._blocked_until.get(address)
            if until is None:
                return None
            remaining = until - time.monotonic()
            if remaining <= 0:
                del self._blocked_until[address]
                return None
            return max(1, int(remaining + 0.999))

    def is_over_limit(self, count: int) -> bool:
        """Check whether a failure count is past the limit, so that the response is 429 rather than 401."""
        return 0 < self.limit < count

    def record_failure(self, address: str) -> int:
        """Store one failure and block the address when it reaches the limit; return the count."""
        if self.limit <= 0:
            return 0
        now = utcnow()
        since = now - dt.timedelta(seconds=self.window)
        with self.database.session() as session:
            session.add(AuthFailure(remote_addr=address, created_at=now))
            session.execute(delete(AuthFailure).where(AuthFailure.created_at < since))
            session.commit()
            count = session.scalar(
                select(func.count())
                .select_from(AuthFailure)
                .where(AuthFailure.remote_addr == address, AuthFailure.created_at >= since)
            ) or 0
        if count >= self.limit:
            with self._lock:
                self._blocked_until[address] = time.monotonic() + self.window
            log.warning(
                "blocking client after %d failed authentications in %.0f s: remote=%s",
                count, self.window, address,
            )
        return count
