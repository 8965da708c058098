"""`gitsrv webhook`: CI webhook targets, their deliveries and redeliveries."""

from __future__ import annotations

import json

import click
from sqlalchemy import select

from gitsrv.cli.common import database_for, info, print_table, with_settings
from gitsrv.config import Settings
from gitsrv.db.models import Delivery, DeliveryAttempt, Event, WebhookTarget, as_utc
from gitsrv.webhook.addresses import TargetURLError
from gitsrv.webhook.targets import (
    add_target,
    disable_target,
    enable_target,
    redeliver,
    remove_target,
)


@click.group()
def webhook() -> None:
    """Register CI webhook targets and inspect their deliveries."""


def _target_or_fail(session, target_id: int) -> WebhookTarget:
    target = session.get(WebhookTarget, target_id)
    if target is None:
        raise click.ClickException(f"no webhook target with id {target_id}")
    return target


@webhook.command("add")
@click.option("--url", required=True, help="http:// or https:// URL that receives events.")
@click.option("--secret", help="HMAC-SHA256 key for X-Gitsrv-Signature-256; generated and printed if omitted.")
@click.option("--repo", "repo_filters", multiple=True, metavar="GLOB",
              help="Only events of repositories matching GLOB (repeatable; * matches /).")
@click.option("--ref", "ref_filters", multiple=True, metavar="GLOB",
              help="Only events with a ref matching GLOB, for example 'refs/heads/*' (repeatable).")
@click.option("--allow-unsafe-address", is_flag=True,
              help="Allow a host that resolves to a link-local, multicast or unspecified address.")
@with_settings
def webhook_add(settings: Settings, url: str, secret: str | None, repo_filters: tuple[str, ...],
                ref_filters: tuple[str, ...], allow_unsafe_address: bool) -> None:
    """Register a target; a generated secret is printed alone on stdout."""
    database = database_for(settings)
    with database.session() as session:
        try:
            target = add_target(session, url, secret, repo_filters, ref_filters, allow_unsafe_address)
        except TargetURLError as error:
            raise click.BadParameter(str(error), param_hint="--url") from None
        session.commit()
        info(f"added webhook target {target.id}: {url}")
        if secret is None:
            info("Generated signing secret (shown only once):")
            click.echo(target.secret)


@webhook.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array for scripts.")
@with_settings
def webhook_list(settings: Settings, as_json: bool) -> None:
    """List targets: id, state, URL, filters, failed events in a row."""
    database = database_for(settings)
    with database.session() as session:
        targets = session.scalars(select(WebhookTarget).order_by(WebhookTarget.id)).all()
    records = [
        {
            "id": t.id,
            "url": t.url,
            "enabled": t.enabled,
            "repo_filters": json.loads(t.repo_filters),
            "ref_filters": json.loads(t.ref_filters),
            "allow_unsafe_address": t.allow_unsafe_address,
            "consecutive_failures": t.consecutive_failures,
            "disabled_reason": t.disabled_reason,
        }
        for t in targets
    ]
    if as_json:
        click.echo(json.dumps(records, indent=2))
        return
    rows = []
    for record in records:
        filters = [f"repo:{p}" for p in record["repo_filters"]] + [f"ref:{p}" for p in record["ref_filters"]]
        state = "enabled" if record["enabled"] else "disabled"
        rows.append([str(record["id"]), state, record["url"], ",".join(filters) or "-",
                     str(record["consecutive_failures"]), record["disabled_reason"] or ""])
    print_table(["ID", "STATE", "URL", "FILTERS", "FAILED", "REASON"], rows)


@webhook.command("remove")
@click.argument("target_id", metavar="ID", type=int)
@with_settings
def webhook_remove(settings: Settings, target_id: int) -> None:
    """Delete a target with its delivery history."""
    database = database_for(settings)
    with database.session() as session:
        remove_target(session, _target_or_fail(session, target_id))
        session.commit()
    info(f"removed webhook target {target_id}")


@webhook.command("disable")
@click.argument("target_id", metavar="ID", type=int)
@with_settings
def webhook_disable(settings: Settings, target_id: int) -> None:
    """Stop delivering to a target; new events wait for it as pending."""
    database = database_for(settings)
    with database.session() as session:
        disable_target(session, _target_or_fail(session, target_id), "disabled by an operator")
        session.commit()
    info(f"disabled webhook target {target_id}")


@webhook.command("enable")
@click.argument("target_id", metavar="ID", type=int)
@with_settings
def webhook_enable(settings: Settings, target_id: int) -> None:
    """Enable a target again and deliver what is pending for it."""
    database = database_for(settings)
    with database.session() as session:
        pending = enable_target(session, _target_or_fail(session, target_id))
        session.commit()
    info(f"enabled webhook target {target_id}; pending deliveries due now: {pending}")


@webhook.command("deliveries")
@click.option("--target", "target_id", type=int, help="Only this target's attempts.")
@click.option("--event", "event_id", help="Only this event's attempts.")
@click.option("--failed", is_flag=True, help="Only failed attempts (whatever their delivery's state now).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1), help="Maximum attempts shown.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array for scripts.")
@with_settings
def webhook_deliveries(settings: Settings, target_id: int | None, event_id: str | None, failed: bool,
                       limit: int, as_json: bool) -> None:
    """List delivery attempts, newest first: time, event, target, status or error, duration."""
    database = database_for(settings)
    with database.session() as session:
        query = (
            select(DeliveryAttempt, Delivery)
            .join(Delivery, DeliveryAttempt.delivery_id == Delivery.id)
            .order_by(DeliveryAttempt.id.desc())
            .limit(limit)
        )
        if target_id is not None:
            query = query.where(Delivery.target_id == target_id)
        if event_id is not None:
            query = query.where(Delivery.event_id == event_id)
        if failed:
            query = query.where(DeliveryAttempt.error.is_not(None))
        records = [
            {
                "time": as_utc(attempt.started_at).isoformat(),
                "event_id": delivery.event_id,
                "target_id": delivery.target_id,
                "attempt": attempt.number,
                "status_code": attempt.status_code,
                "error": attempt.error,
                "duration_ms": attempt.duration_ms,
                "response_excerpt": attempt.response_excerpt,
                "delivery_state": delivery.state,
            }
            for attempt, delivery in session.execute(query).all()
        ]
    if as_json:
        click.echo(json.dumps(records, indent=2))
        return
    # RESULT is this attempt's outcome, and DELIVERY is the current state of its delivery.
    print_table(
        ["TIME", "EVENT", "TARGET", "ATTEMPT", "RESULT", "MS", "DELIVERY"],
        [[format_time_exact(r["time"]), r["event_id"], str(r["target_id"]), str(r["attempt"]),
          r["error"] or f"HTTP {r['status_code']}", str(r["duration_ms"]), r["delivery_state"]] for r in records],
    )


def format_time_exact(iso: str) -> str:
    return iso[:19].replace("T", " ")


@webhook.command("redeliver")
@click.argument("event_id", metavar="EVENT_ID")
@click.option("--target", "target_id", type=int, help="Only to this target.")
@with_settings
def webhook_redeliver(settings: Settings, event_id: str, target_id: int | None) -> None:
    """Send an event again; attempt numbers continue from earlier attempts."""
    database = database_for(settings)
    with database.session() as session:
        event = session.get(Event, event_id)
        if event is None:
            raise click.ClickException(f"no event with id {event_id}")
        if target_id is not None:
            _target_or_fail(session, target_id)
        queued = redeliver(session, event, target_id)
        session.commit()
        if not queued and target_id is not None:
            raise click.ClickException(f"webhook target {target_id} does not match event {event_id}")
        if not queued:
            raise click.ClickException(f"no webhook target matches event {event_id}")
        info(f"queued event {event_id} for {len(queued)} webhook target(s); a running server delivers it within seconds")
