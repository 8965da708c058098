"""`gitsrv app`: OAuth2 applications for the client-credentials grant."""

from __future__ import annotations

import click

from gitsrv.auth.apps import create_app, list_apps, revoke_app
from gitsrv.cli.common import (
    database_for,
    format_time,
    info,
    parse_scope_option,
    print_table,
    with_settings,
)
from gitsrv.config import Settings


@click.group()
def app() -> None:
    """Register OAuth2 applications for the client-credentials grant."""


@app.command("create")
@click.option("--name", required=True, help="A label for the application.")
@click.option("--scope", "scope_names", multiple=True, required=True,
              help="A scope the application may request; repeat for more.")
@with_settings
def app_create(settings: Settings, name: str, scope_names: tuple[str, ...]) -> None:
    """Create an application; print its client id and client secret on stdout."""
    scopes = parse_scope_option(scope_names)
    database = database_for(settings)
    with database.session() as session:
        row, secret = create_app(session, name, scopes)
        session.commit()
        info(f"created application {row.id} ({row.name}) with scopes: {row.scopes}")
        info("client id and client secret follow, one per line; the secret is shown only once.")
        click.echo(row.client_id)
        click.echo(secret)


@app.command("list")
@with_settings
def app_list(settings: Settings) -> None:
    """List applications: id, name, client id, scopes, state."""
    database = database_for(settings)
    with database.session() as session:
        rows = list_apps(session)
    print_table(
        ["ID", "NAME", "CLIENT ID", "SCOPES", "CREATED", "STATE"],
        [[str(r.id), r.name, r.client_id, r.scopes.replace(" ", ","), format_time(r.created_at),
          "revoked" if r.revoked_at else "active"] for r in rows],
    )


@app.command("revoke")
@click.argument("app_id", metavar="ID", type=int)
@with_settings
def app_revoke(settings: Settings, app_id: int) -> None:
    """Revoke an application and, with it, every access token it was issued."""
    database = database_for(settings)
    with database.session() as session:
        row = revoke_app(session, app_id)
        if row is None:
            raise click.ClickException(f"no application with id {app_id}")
        session.commit()
    info(f"revoked application {app_id}")
