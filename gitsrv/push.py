"""Carry out one push: quarantine, inspect, decide, apply, record, report.

The rules come from gitsrv.access.policy. This module gathers the facts
they need and applies the accepted ref updates with compare-and-swap. It
then records the push and its CI event in one transaction and builds the
response the git client reads.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from sqlalchemy import insert
from sqlalchemy.exc import SQLAlchemyError

from gitsrv.access.policy import (
    ZERO_ID,
    Classification,
    RefUpdate,
    Verdict,
    apply_atomic,
    classify,
    decide,
)
from gitsrv.auth.store import Identity
from gitsrv.config import Settings
from gitsrv.db.engine import Database
from gitsrv.db.models import Delivery, Event, Push, PushRefUpdate, utcnow
from gitsrv.git import maintenance, pktline
from gitsrv.git.command import GitError
from gitsrv.git.inspect import ObjectInspector
from gitsrv.git.quarantine import Quarantine, UnpackError
from gitsrv.git.receive_pack import PushRequest, format_report, read_request
from gitsrv.git.refs import read_refs, stale_reason, update_refs
from gitsrv.git.repos import Repository
from gitsrv.webhook.delivery import DeliveryWorker
from gitsrv.webhook.events import (
    AcceptedRef,
    PushEventInput,
    matching_targets,
    record_push_event,
)
from gitsrv.webhook.trigger import accepted_refs, report_first_attempts, tip_messages_of

log = logging.getLogger(__name__)

MISSING_OBJECTS = "missing necessary objects"


@dataclass
class RefResult:
    """The outcome of one ref update: `ok`, `rejected` by policy, or `failed`."""

    update: RefUpdate
    classification: Classification
    status: str
    reason: str | None = None

    @property
    def error(self) -> str | None:
        return None if self.status == "ok" else self.reason


@dataclass(frozen=True)
class PushServices:
    """Services a push uses beyond the request: storage, settings and webhook delivery."""

    database: Database
    settings: Settings
    delivery: DeliveryWorker | None = None


@dataclass(frozen=True)
class PushContext:
    repository: Repository
    identity: Identity
    remote_addr: str | None
    ref_limits: tuple[str, ...] = ()


def _decide_all(
    request: PushRequest, inspector: ObjectInspector, context: PushContext
) -> list[Verdict]:
    classifications = inspector.classify_all(request.updates)
    return [
        decide(update, classification, context.identity.scopes, context.ref_limits)
        for update, classification in zip(request.updates, classifications)
    ]


def _check_objects(
    updates: list[RefUpdate], verdicts: list[Verdict], inspector: ObjectInspector
) -> list[str | None]:
    """Return, per update, MISSING_OBJECTS when an accepted update's objects are incomplete.

    One connectivity walk covers every new tip; only when it fails are the
    tips checked one by one to find the incomplete ones.
    """
    errors: list[str | None] = [None] * len(updates)
    candidates = [
        index
        for index, (update, verdict) in enumerate(zip(updates, verdicts))
        if verdict.accepted and update.new != ZERO_ID
    ]
    if not candidates or inspector.is_connected(updates[index].new for index in candidates):
        return errors
    for index in candidates:
        if not inspector.is_connected([updates[index].new]):
            errors[index] = MISSING_OBJECTS
    return errors


def _apply(context: PushContext, request: PushRequest, accepted: list[RefUpdate]) -> dict[str, str]:
    """Apply accepted updates; return the failure reason of each ref that did not change."""
    repo = context.repository.path
    error = update_refs(repo, accepted)
    if error is None:
        return {}
    log.info("ref transaction failed, checking refs one by one: repo=%s error=%s", context.repository.name, error)
    failures: dict[str, str] = {}
    if request.atomic:
        for update in accepted:
            failures[update.ref] = stale_reason(repo, update) or "atomic push failure"
        return failures
    for update in accepted:
        single_error = update_refs(repo, [update])
        if single_error is not None:
            failures[update.ref] = stale_reason(repo, update) or f"failed to update ref: {single_error}"
    return failures


def _record(
    database: Database,
    context: PushContext,
    request: PushRequest,
    results: list[RefResult],
    refs_before: dict[str, str],
    settings: Settings,
) -> tuple[Event | None, list[Delivery]]:
    """Store the push and, if any ref changed, its CI event and deliveries, in one transaction."""
    changed = [r for r in results if r.status == "ok" and r.classification is not Classification.READ]
    event_input = None
    target_ids: list[int] = []
    if changed:
        updates = [(r.update.ref, r.update.old, r.update.new, r.classification) for r in changed]
        refs = [AcceptedRef(ref, old, new, str(classification)) for ref, old, new, classification in updates]
        messages: dict[str, str | None] = {}
        # A short session of its own: the git commands below run outside any transaction.
        with database.session() as session:
            targets = matching_targets(session, context.repository.name, [u[0] for u in updates])
            target_ids = [target.id for target in targets]
        # Commit lists and skip markers only matter to a target that gets the event.
        if target_ids:
            try:
                refs = accepted_refs(context.repository.path, updates, refs_before, settings.webhook_max_commits)
                messages = tip_messages_of(context.repository.path, refs)
            except (OSError, GitError) as error:
                # The refs have changed already: deliver the event without commit lists.
                log.error("reading commits for the push event failed: repo=%s error=%s", context.repository.name, error)
        event_input = PushEventInput(
            repository=context.repository.name,
            refs=refs,
            token_id=context.identity.token_id,
            token_name=context.identity.name,
            push_options=request.push_options,
            tip_messages=messages,
        )

    with database.session() as session:
        push = Push(
            token_id=context.identity.token_id,
            repository=context.repository.name,
            remote_addr=context.remote_addr,
            push_options=json.dumps(request.push_options),
            atomic=request.atomic,
        )
        session.add(push)
        session.flush()
        # One multi-row INSERT: a mirror push can carry thousands of ref updates.
        session.execute(
            insert(PushRefUpdate),
            [
                {
                    "push_id": push.id,
                    "ref": result.update.ref,
                    "old": result.update.old,
                    "new": result.update.new,
                    "classification": str(result.classification),
                    "status": result.status,
                    "reason": result.reason,
                }
                for result in results
            ],
        )
        event, deliveries = None, []
        if event_input is not None:
            # The background poller leaves new deliveries to the push's own
            # first attempt until the budget has passed.
            first_attempt_at = utcnow() + dt.timedelta(seconds=settings.webhook_inline_budget + 2)
            event, deliveries = record_push_event(session, push.id, event_input, first_attempt_at, target_ids)
        session.commit()
    return event, deliveries


def _log_push(context: PushContext, results: list[RefResult]) -> None:
    """Log one summary line per push and one line per ref update, for grep."""
    accepted = sum(1 for r in results if r.status == "ok")
    log.info(
        "push token=%d repo=%s remote=%s refs=%d ok=%d rejected=%d failed=%d",
        context.identity.token_id,
        context.repository.name,
        context.remote_addr,
        len(results),
        accepted,
        sum(1 for r in results if r.status == "rejected"),
        sum(1 for r in results if r.status == "failed"),
    )
    for r in results:
        log.info(
            "push ref token=%d repo=%s ref=%s old=%s new=%s classification=%s status=%s%s",
            context.identity.token_id,
            context.repository.name,
            r.update.ref,
            r.update.old,
            r.update.new,
            r.classification,
            r.status,
            f" reason={r.reason!r}" if r.reason else "",
        )


def receive(stream: BinaryIO, context: PushContext, services: PushServices) -> Iterator[bytes]:
    """Handle a receive-pack request body; yield the response body.

    Raises pktline.ProtocolError before yielding anything when the request
    is malformed.
    """
    request = read_request(stream)
    if request is None:
        # The probe request git sends before a large, chunked push.
        return iter(())
    return _receive(stream, request, context, services)


def _receive(
    stream: BinaryIO,
    request: PushRequest,
    context: PushContext,
    services: PushServices,
) -> Iterator[bytes]:
    repo = context.repository.path
    unpack_error: str | None = None
    results: list[RefResult]
    refs_before: dict[str, str] = {}

    with Quarantine(repo) as quarantine:
        try:
            quarantine.receive_pack(stream)
        except UnpackError as error:
            unpack_error = str(error)
            log.warning("unpack failed: repo=%s token=%d error=%s", context.repository.name, context.identity.token_id, error)

        if unpack_error is not None:
            results = [RefResult(u, classify(u, False), "failed", "unpacker error") for u in request.updates]
        else:
            inspector = ObjectInspector(repo, quarantine.environ)
            verdicts = _decide_all(request, inspector, context)
            object_errors = _check_objects(request.updates, verdicts, inspector)
            verdicts = [
                Verdict(v.classification, False, error) if error else v
                for v, error in zip(verdicts, object_errors)
            ]
            if request.atomic:
                verdicts = apply_atomic(verdicts)
            results = [
                RefResult(u, v.classification, "ok" if v.accepted else "rejected", v.reason)
                for u, v in zip(request.updates, verdicts)
            ]
            accepted = [r.update for r in results if r.status == "ok"]
            if accepted:
                if any(u.is_create and u.ref.startswith("refs/heads/") for u in accepted):
                    # New commits of a created branch are those no earlier ref reaches.
                    refs_before = {name: object_id for object_id, name in read_refs(repo)}
                quarantine.migrate()
                failures = _apply(context, request, accepted)
                for result in results:
                    if result.update.ref in failures:
                        result.status = "failed"
                        result.reason = failures[result.update.ref]

    _log_push(context, results)
    messages = []
    try:
        event, deliveries = _record(services.database, context, request, results, refs_before, services.settings)
    except SQLAlchemyError:
        # The refs have changed already, so report them; only the record is lost.
        log.exception("recording the push failed: repo=%s token=%d", context.repository.name, context.identity.token_id)
        event, deliveries = None, []
        messages.append("gitsrv: the push was applied but could not be recorded; CI was not triggered")
    if event is not None:
        messages = report_first_attempts(services.delivery, event, deliveries, services.settings.webhook_inline_budget)

    body = []
    # Send the messages even when the client asked for `quiet`: git sends it
    # whenever stderr is not a terminal, and git-receive-pack also relays
    # hook output under `quiet`, which only silences progress meters.
    if request.side_band:
        body.extend(pktline.side_band_progress(message + "\n") for message in messages)
    if "report-status" in request.capabilities or "report-status-v2" in request.capabilities:
        body.append(format_report(request, unpack_error, [(r.update.ref, _one_line(r.error)) for r in results]))
    if request.side_band:
        body.append(pktline.FLUSH)
    yield b"".join(body)

    if any(r.status == "ok" for r in results):
        maintenance.schedule(repo)


def _one_line(text: str | None) -> str | None:
    return " ".join(text.split()) if text else text
