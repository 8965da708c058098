"""CI API: trigger a CI event for a ref, and list events with their delivery state.

Triggering needs `ci:read-update`, reading events `ci:read` (which
`ci:read-update` includes); both need read access to the repository
(`source:read` or `source:read-update`, and the token's repo limits).
"""

from __future__ import annotations

import json
import logging
import re

from sqlalchemy import select
from werkzeug.wrappers import Request, Response

from gitsrv.access.policy import ZERO_ID
from gitsrv.access.scopes import FETCH_SCOPES, Scope
from gitsrv.auth.store import Identity
from gitsrv.config import Settings
from gitsrv.db.engine import Database
from gitsrv.db.models import Delivery, Event, as_utc
from gitsrv.git.refs import current_value
from gitsrv.git.repos import (
    Repository,
)
from gitsrv.web.api import json_response
from gitsrv.web.visibility import visible_repository
from gitsrv.webhook.delivery import DeliveryWorker
from gitsrv.webhook.events import record_trigger_event

log = logging.getLogger(__name__)

REPO_CI_PATH = re.compile(r"^/api/v1/repos/(?P<repo>.+)/ci/(?P<action>trigger|events)$")
EVENT_PATH = re.compile(r"^/api/v1/ci/events/(?P<event_id>[0-9a-f-]{36})$")
CI_READ_SCOPES = frozenset({Scope.CI_READ, Scope.CI_READ_UPDATE})


def _error(status: int, message: str) -> Response:
    return json_response({"error": message}, status)


def _readable_repository(settings: Settings, identity: Identity, path: str) -> Repository | Response:
    """Return the repository if the token may read it, else the error response."""
    if not identity.scopes & FETCH_SCOPES:
        return _error(403, f"reading this repository requires scope {Scope.SOURCE_READ}")
    repository = visible_repository(settings.repos_dir, identity, path)
    if repository is None:
        return _error(404, "repository not found")
    return repository


def _delivery_summary(delivery: Delivery, with_attempts: bool) -> dict:
    summary = {
        "target_id": delivery.target_id,
        "state": delivery.state,
        "attempts": delivery.attempts,
        "last_error": delivery.last_error,
        "next_attempt_at": as_utc(delivery.next_attempt_at).isoformat() if delivery.state == "pending" else None,
        "delivered_at": as_utc(delivery.delivered_at).isoformat() if delivery.delivered_at else None,
    }
    if with_attempts:
        summary["attempt_log"] = [
            {
                "attempt": attempt.number,
                "started_at": as_utc(attempt.started_at).isoformat(),
                "duration_ms": attempt.duration_ms,
                "status_code": attempt.status_code,
                "error": attempt.error,
                "response_excerpt": attempt.response_excerpt,
            }
            for attempt in delivery.attempt_log
        ]
    return summary


def _event_summary(event: Event, with_attempts: bool = False) -> dict:
    if event.skip_reason:
        state = "skipped"
    elif not event.deliveries:
        state = "no-targets"
    elif all(d.state == "delivered" for d in event.deliveries):
        state = "delivered"
    elif any(d.state == "pending" for d in event.deliveries):
        state = "pending"
    else:
        state = "failed"
    summary = {
        "id": event.id,
        "event": event.kind,
        "repository": event.repository,
        "created_at": as_utc(event.created_at).isoformat(),
        "state": state,
        "skip_reason": event.skip_reason,
        "deliveries": [_delivery_summary(d, with_attempts) for d in event.deliveries],
    }
    if with_attempts:
        summary["payload"] = json.loads(event.body)
    return summary


class CIApi:
    """Handlers for /api/v1/repos/<path>/ci/... and /api/v1/ci/events/<id>."""

    def __init__(self, settings: Settings, database: Database, delivery: DeliveryWorker | None) -> None:
        self.settings = settings
        self.database = database
        self.delivery = delivery

    def matches(self, path: str) -> bool:
        return bool(REPO_CI_PATH.match(path) or EVENT_PATH.match(path))

    def dispatch(self, request: Request, identity: Identity) -> Response:
        match = REPO_CI_PATH.match(request.path)
        if match and match["action"] == "trigger":
            if request.method != "POST":
                return _error(405, "method not allowed: use POST")
            return self.trigger(request, identity, match["repo"])
        if request.method != "GET":
            return _error(405, "method not allowed: use GET")
        if not identity.scopes & CI_READ_SCOPES:
            return _error(403, f"reading CI events requires scope {Scope.CI_READ}")
        if match:
            return self.list_events(request, identity, match["repo"])
        return self.show_event(identity, EVENT_PATH.match(request.path)["event_id"])

    def trigger(self, request: Request, identity: Identity, path: str) -> Response:
        if Scope.CI_READ_UPDATE not in identity.scopes:
            return _error(403, f"triggering CI requires scope {Scope.CI_READ_UPDATE}")
        repository = _readable_repository(self.settings, identity, path)
        if isinstance(repository, Response):
            return repository
        payload = request.get_json(force=True, silent=True)
        ref = payload.get("ref") if isinstance(payload, dict) else None
        if not isinstance(ref, str):
            return _error(400, 'invalid request body: expected JSON {"ref": "refs/heads/<branch>"}')
        if not ref.startswith("refs/"):
            return _error(400, f"invalid ref {ref!r}: give the full ref name, for example refs/heads/{ref}")
        commit = current_value(repository.path, ref)
        if commit == ZERO_ID:
            return _error(404, f"ref {ref} not found in {repository.name}")
        with self.database.session() as session:
            event, deliveries = record_trigger_event(
                session, repository.name, ref, commit, identity.token_id, identity.name
            )
            session.commit()
            event_id, count = event.id, len(deliveries)
        log.info("CI trigger: event=%s repo=%s ref=%s token=%d targets=%d",
                 event_id, repository.name, ref, identity.token_id, count)
        if self.delivery is not None:
            self.delivery.wake()
        return json_response({"event_id": event_id, "ref": ref, "after": commit, "targets": count}, 202)

    def list_events(self, request: Request, identity: Identity, path: str) -> Response:
        repository = _readable_repository(self.settings, identity, path)
        if isinstance(repository, Response):
            return repository
        limit = request.args.get("limit", default=50, type=int)
        limit = max(1, min(limit, 500))
        with self.database.session() as session:
            events = session.scalars(
                select(Event)
                .where(Event.repository == repository.name)
                .order_by(Event.created_at.desc())
                .limit(limit)
            ).all()
            return json_response({"events": [_event_summary(event) for event in events]})

    def show_event(self, identity: Identity, event_id: str) -> Response:
        with self.database.session() as session:
            event = session.get(Event, event_id)
            if event is None:
                return _error(404, "event not found")
            repository = _readable_repository(self.settings, identity, event.repository)
            if isinstance(repository, Response):
                # An event of a repository the token may not read does not exist for it.
                return _error(404, "event not found") if repository.status_code == 404 else repository
            return json_response(_event_summary(event, with_attempts=True))
