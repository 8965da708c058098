"""`gitsrv audit`: list recorded pushes."""

from __future__ import annotations

import json

import click
from sqlalchemy import select

from gitsrv.cli.common import database_for, with_settings
from gitsrv.config import Settings
from gitsrv.db.models import Push, as_utc, utcnow
from gitsrv.durations import parse_duration, parse_moment
from gitsrv.git.repos import normalize_name


@click.command()
@click.option("--repo", help="Only pushes to this repository.")
@click.option("--token", "token_id", type=int, help="Only pushes made with this token id.")
@click.option("--since", metavar="DURATION|DATE", help="Only pushes newer than this: 24h, 7d, or an ISO date.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(min=1), help="Maximum pushes shown.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array for scripts.")
@with_settings
def audit(settings: Settings, repo: str | None, token_id: int | None, since: str | None, limit: int, as_json: bool) -> None:
    """List recorded pushes, newest first, with every ref update and its verdict."""
    since_moment = None
    if since:
        try:
            since_moment = utcnow() - parse_duration(since)
        except ValueError:
            try:
                since_moment = parse_moment(since)
            except ValueError:
                raise click.BadParameter(
                    f"invalid value {since!r}: expected a duration such as 24h or 7d, "
                    "or an ISO 8601 date such as 2027-01-31",
                    param_hint="--since",
                ) from None
    database = database_for(settings)
    with database.session() as session:
        query = select(Push).order_by(Push.id.desc()).limit(limit)
        if repo:
            query = query.where(Push.repository == normalize_name(repo))
        if token_id is not None:
            query = query.where(Push.token_id == token_id)
        if since_moment is not None:
            query = query.where(Push.created_at >= since_moment)
        pushes = session.scalars(query).all()
        records = [
            {
                "id": push.id,
                "time": as_utc(push.created_at).isoformat(),
                "repository": push.repository,
                "token_id": push.token_id,
                "remote_addr": push.remote_addr,
                "atomic": push.atomic,
                "push_options": json.loads(push.push_options),
                "ref_updates": [
                    {"ref": u.ref, "old": u.old, "new": u.new, "classification": u.classification,
                     "status": u.status, "reason": u.reason}
                    for u in push.ref_updates
                ],
            }
            for push in pushes
        ]
    if as_json:
        click.echo(json.dumps(records, indent=2))
        return
    for record in records:
        click.echo(
            f"{record['time']}  push {record['id']}  repo {record['repository']}  "
            f"token {record['token_id']}  from {record['remote_addr']}"
        )
        for update in record["ref_updates"]:
            line = f"    {update['status']:<8} {update['classification']:<10} {update['ref']} {update['old'][:12]}..{update['new'][:12]}"
            click.echo(line + (f" ({update['reason']})" if update["reason"] else ""))
