"""The `gitsrv` command: serve, and administer repositories, tokens and webhooks.

Secrets a command creates (a token, a webhook secret) go alone on stdout so
that `T=$(gitsrv token create ...)` works; everything else goes to stderr.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import sys

import click
from sqlalchemy import select

from gitsrv import __version__
from gitsrv.access.explain import explain
from gitsrv.access.scopes import (
    VALID_SCOPE_NAMES,
    InvalidScopeError,
    format_scopes,
    parse_scopes,
)
from gitsrv.auth.apps import create_app, list_apps, revoke_app
from gitsrv.auth.store import (
    as_utc,
    create_token,
    identity_of,
    is_usable,
    limits_of,
    list_tokens,
    revoke_token,
)
from gitsrv.config import Settings, load_settings
from gitsrv.db import migrate
from gitsrv.db.engine import Database
from gitsrv.db.models import Push, Token, WebhookTarget, utcnow
from gitsrv.db.ready import SchemaBehindError, open_database
from gitsrv.durations import parse_duration, parse_moment
from gitsrv.git.repos import (
    InvalidRepoPathError,
    create_repository,
    list_repositories,
    normalize_name,
)
from gitsrv.webhook.signing import generate_secret

DATA_HELP = "Data folder: repos/ and the SQLite database gitsrv.db. [env: GITSRV_DATA; default: ./gitsrv-data]"


def with_settings(command):
    """Add --data to a command and pass the resulting Settings as `settings`."""

    @click.option("--data", "data_dir", metavar="DIR", envvar="GITSRV_DATA", help=DATA_HELP)
    @functools.wraps(command)
    def wrapper(*args, data_dir=None, **kwargs):
        return command(*args, settings=load_settings(data_dir), **kwargs)

    return wrapper


def database_for(settings: Settings) -> Database:
    try:
        return open_database(settings)
    except SchemaBehindError as error:
        raise click.ClickException(str(error)) from None


def info(message: str) -> None:
    click.echo(message, err=True)


@click.group(
    epilog="The database is the SQLite file DIR/gitsrv.db unless GITSRV_DATABASE_URL "
    "(any SQLAlchemy URL, for example postgresql+psycopg://user@host/gitsrv) is set."
)
@click.version_option(__version__, prog_name="gitsrv")
def main() -> None:
    """gitsrv: a git smart-HTTP server with token-scoped access."""


@main.command()
@click.option("--bind", default="127.0.0.1:8000", show_default=True, metavar="HOST:PORT", help="Address to listen on.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=1), help="Worker processes.")
@click.option("--threads", default=16, show_default=True, type=click.IntRange(min=1), help="Threads per worker; each serves one request at a time.")
@click.option("--certfile", type=click.Path(exists=True, dir_okay=False), help="TLS certificate (PEM) to serve HTTPS.")
@click.option("--keyfile", type=click.Path(exists=True, dir_okay=False), help="TLS private key (PEM) for --certfile.")
@with_settings
def serve(settings: Settings, bind: str, workers: int, threads: int, certfile: str | None, keyfile: str | None) -> None:
    """Serve the repositories over smart HTTP(S) under gunicorn."""
    if bool(certfile) != bool(keyfile):
        raise click.UsageError("--certfile and --keyfile must be given together")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s")
    settings.repos_dir.mkdir(parents=True, exist_ok=True)
    database_for(settings).dispose()
    from gitsrv.server import serve as run_server

    run_server(settings, bind, workers, threads, certfile, keyfile)


@main.group()
def repo() -> None:
    """Create and list repositories."""


@repo.command("create")
@click.argument("path")
@with_settings
def repo_create(settings: Settings, path: str) -> None:
    """Create an empty bare repository at PATH (HEAD points at refs/heads/main)."""
    try:
        created = create_repository(settings.repos_dir, path)
    except (InvalidRepoPathError, FileExistsError) as error:
        raise click.ClickException(str(error)) from None
    info(f"created repository {created.name} at {created.path}")


@repo.command("list")
@with_settings
def repo_list(settings: Settings) -> None:
    """List repositories, one name per line."""
    for found in list_repositories(settings.repos_dir):
        click.echo(found.name)


@main.group()
def token() -> None:
    """Create, list and revoke API tokens."""


def parse_scope_option(scope_names: tuple[str, ...]):
    try:
        return parse_scopes(scope_names)
    except InvalidScopeError as error:
        raise click.BadParameter(str(error), param_hint="--scope") from None


def format_time(moment: dt.datetime | None) -> str:
    moment = as_utc(moment)
    return moment.strftime("%Y-%m-%d %H:%M") if moment else "-"


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    """Print rows as left-aligned columns a person can read."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    for row in [headers, *rows]:
        click.echo("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())


@token.command("create")
@click.option("--name", required=True, help="A label for the token, shown in lists and logs.")
@click.option(
    "--scope",
    "scope_names",
    multiple=True,
    required=True,
    help="A scope to grant; repeat for more. Valid: " + ", ".join(VALID_SCOPE_NAMES),
)
@click.option("--expires-in", metavar="DURATION", help="Lifetime, for example 30d, 12h, 45m or 2w.")
@click.option("--expires-at", metavar="DATE", help="Expiry as an ISO 8601 date or time (UTC unless a zone is given).")
@click.option("--repo", "repo_limits", multiple=True, metavar="GLOB",
              help="Limit the token to repositories matching GLOB (repeatable; * matches /). Others answer 404.")
@click.option("--ref", "ref_limits", multiple=True, metavar="GLOB",
              help="Limit which refs the token may change, for example 'refs/heads/ci/*' (repeatable).")
@with_settings
def token_create(
    settings: Settings,
    name: str,
    scope_names: tuple[str, ...],
    expires_in: str | None,
    expires_at: str | None,
    repo_limits: tuple[str, ...],
    ref_limits: tuple[str, ...],
) -> None:
    """Create a token; print it alone on stdout (it is shown only once)."""
    scopes = parse_scope_option(scope_names)
    if expires_in and expires_at:
        raise click.UsageError("--expires-in and --expires-at cannot be combined")
    expiry = None
    try:
        if expires_in:
            expiry = utcnow() + parse_duration(expires_in)
        elif expires_at:
            expiry = parse_moment(expires_at)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--expires-in" if expires_in else "--expires-at") from None
    if expiry is not None and expiry <= utcnow():
        raise click.BadParameter(f"expiry {expiry.isoformat()} is in the past", param_hint="--expires-at")
    for pattern in ref_limits:
        if not pattern.startswith("refs/"):
            raise click.BadParameter(f"invalid ref pattern {pattern!r}: must start with refs/", param_hint="--ref")

    database = database_for(settings)
    with database.session() as session:
        row, secret = create_token(
            session, name, scopes, expires_at=expiry, repo_limits=repo_limits, ref_limits=ref_limits
        )
        session.commit()
        info(f"created token {row.id} ({row.name}) with scopes: {row.scopes}")
        if expiry:
            info(f"expires {expiry.isoformat()}")
    info("Store it now: it is shown only once.")
    click.echo(secret)


def token_record(row) -> dict:
    return {
        "id": row.id,
        "name": row.name,
        "scopes": row.scopes.split(),
        "repo_limits": limits_of(row.repo_limits),
        "ref_limits": limits_of(row.ref_limits),
        "app_id": row.app_id,
        "created_at": as_utc(row.created_at).isoformat(),
        "expires_at": as_utc(row.expires_at).isoformat() if row.expires_at else None,
        "last_used_at": as_utc(row.last_used_at).isoformat() if row.last_used_at else None,
        "revoked_at": as_utc(row.revoked_at).isoformat() if row.revoked_at else None,
    }


@token.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array for scripts.")
@click.option("--all", "include_access_tokens", is_flag=True, help="Include OAuth2 access tokens.")
@with_settings
def token_list(settings: Settings, as_json: bool, include_access_tokens: bool) -> None:
    """List tokens: id, name, scopes, limits, created, expires, last used."""
    database = database_for(settings)
    with database.session() as session:
        rows = list_tokens(session, include_access_tokens)
    if as_json:
        click.echo(json.dumps([token_record(row) for row in rows], indent=2))
        return
    table = []
    for row in rows:
        limits = [f"repo:{pattern}" for pattern in limits_of(row.repo_limits)]
        limits += [f"ref:{pattern}" for pattern in limits_of(row.ref_limits)]
        expires = "revoked" if row.revoked_at else format_time(row.expires_at)
        table.append([
            str(row.id), row.name, row.scopes.replace(" ", ","), ",".join(limits) or "-",
            format_time(row.created_at), expires, format_time(row.last_used_at),
        ])
    print_table(["ID", "NAME", "SCOPES", "LIMITS", "CREATED", "EXPIRES", "LAST USED"], table)


@token.command("revoke")
@click.argument("token_id", metavar="ID", type=int)
@with_settings
def token_revoke(settings: Settings, token_id: int) -> None:
    """Revoke a token; its next request is answered 401, on every server."""
    database = database_for(settings)
    with database.session() as session:
        row = revoke_token(session, token_id)
        if row is None:
            raise click.ClickException(f"no token with id {token_id}")
        session.commit()
    info(f"revoked token {token_id}")


@token.command("explain")
@click.argument("token_id", metavar="ID", type=int)
@click.argument("repo")
@click.argument("ref", required=False)
@with_settings
def token_explain(settings: Settings, token_id: int, repo: str, ref: str | None) -> None:
    """Print what token ID may do on REPO (and REF), and why not."""
    database = database_for(settings)
    with database.session() as session:
        row = session.get(Token, token_id)
        if row is None:
            raise click.ClickException(f"no token with id {token_id}")
        identity = identity_of(row)
        usable = is_usable(row, utcnow())
    try:
        name = normalize_name(repo)
    except InvalidRepoPathError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"token {identity.token_id} ({identity.name}): {format_scopes(identity.scopes) or 'no scopes'}")
    if not usable:
        click.echo("this token is revoked or expired: every request with it is answered 401")
    click.echo(f"repository {name}" + (f", ref {ref}" if ref else ""))
    for permission in explain(identity.scopes, identity.repo_limits, identity.ref_limits, name, ref):
        verdict = "allowed" if permission.allowed and usable else "denied"
        reason = permission.reason or ("" if usable else "token is revoked or expired")
        click.echo(f"  {permission.operation:<11} {verdict}" + (f": {reason}" if reason else ""))


@main.group()
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


@main.command()
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
            except ValueError as error:
                raise click.BadParameter(str(error), param_hint="--since") from None
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


@main.group()
def webhook() -> None:
    """Register CI webhook targets for accepted pushes."""


@webhook.command("add")
@click.option("--url", required=True, help="http:// or https:// URL that receives push events.")
@click.option("--secret", help="HMAC-SHA256 key for X-Gitsrv-Signature-256; generated and printed if omitted.")
@with_settings
def webhook_add(settings: Settings, url: str, secret: str | None) -> None:
    """Register a target; a generated secret is printed alone on stdout."""
    if not url.startswith(("http://", "https://")):
        raise click.BadParameter(f"invalid URL {url!r}: must start with http:// or https://", param_hint="--url")
    generated = secret is None
    database = database_for(settings)
    with database.session() as session:
        target = WebhookTarget(url=url, secret=secret or generate_secret())
        session.add(target)
        session.commit()
        info(f"added webhook target {target.id}: {url}")
        if generated:
            info("Generated signing secret (shown only once):")
            click.echo(target.secret)


@webhook.command("list")
@with_settings
def webhook_list(settings: Settings) -> None:
    """List webhook targets: id, state, URL."""
    database = database_for(settings)
    with database.session() as session:
        targets = session.query(WebhookTarget).order_by(WebhookTarget.id).all()
    click.echo(f"{'ID':>4}  {'STATE':<9}  URL")
    for target in targets:
        click.echo(f"{target.id:>4}  {'enabled' if target.enabled else 'disabled':<9}  {target.url}")


@main.group()
def db() -> None:
    """Manage the database schema."""


@db.command("upgrade")
@with_settings
def db_upgrade(settings: Settings) -> None:
    """Apply pending schema migrations (needed before serving from PostgreSQL)."""
    database = Database(settings)
    current, head = migrate.pending_revisions(database.engine)
    if current == head:
        info(f"database is up to date (revision {head})")
        return
    migrate.upgrade(database.engine)
    info(f"database upgraded from revision {current or 'none'} to {head}")


if __name__ == "__main__":
    sys.exit(main())
