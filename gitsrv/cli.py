"""The `gitsrv` command: serve, and administer repositories, tokens and webhooks.

Secrets a command creates (a token, a webhook secret) go alone on stdout so
that `T=$(gitsrv token create ...)` works; everything else goes to stderr.
"""

from __future__ import annotations

import functools
import logging
import sys

import click

from gitsrv import __version__
from gitsrv.access.scopes import VALID_SCOPE_NAMES, InvalidScopeError, parse_scopes
from gitsrv.auth.store import create_token, list_tokens, revoke_token
from gitsrv.config import Settings, load_settings
from gitsrv.db import migrate
from gitsrv.db.engine import Database
from gitsrv.db.models import WebhookTarget
from gitsrv.db.ready import SchemaBehindError, open_database
from gitsrv.git.repos import InvalidRepoPathError, create_repository, list_repositories
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


@token.command("create")
@click.option("--name", required=True, help="A label for the token, shown in lists and logs.")
@click.option(
    "--scope",
    "scope_names",
    multiple=True,
    required=True,
    help="A scope to grant; repeat for more. Valid: " + ", ".join(VALID_SCOPE_NAMES),
)
@with_settings
def token_create(settings: Settings, name: str, scope_names: tuple[str, ...]) -> None:
    """Create a token; print it alone on stdout (it is shown only once)."""
    try:
        scopes = parse_scopes(scope_names)
    except InvalidScopeError as error:
        raise click.BadParameter(str(error), param_hint="--scope") from None
    database = database_for(settings)
    with database.session() as session:
        row, secret = create_token(session, name, scopes)
        session.commit()
        info(f"created token {row.id} ({row.name}) with scopes: {row.scopes}")
    info("Store it now: it is shown only once.")
    click.echo(secret)


@token.command("list")
@with_settings
def token_list(settings: Settings) -> None:
    """List tokens: id, name, scopes, created, revoked."""
    database = database_for(settings)
    with database.session() as session:
        rows = list_tokens(session)
    click.echo(f"{'ID':>4}  {'NAME':<20}  {'CREATED':<20}  {'REVOKED':<20}  SCOPES")
    for row in rows:
        created = row.created_at.strftime("%Y-%m-%d %H:%M:%S")
        revoked = row.revoked_at.strftime("%Y-%m-%d %H:%M:%S") if row.revoked_at else "-"
        click.echo(f"{row.id:>4}  {row.name:<20}  {created:<20}  {revoked:<20}  {row.scopes}")


@token.command("revoke")
@click.argument("token_id", metavar="ID", type=int)
@with_settings
def token_revoke(settings: Settings, token_id: int) -> None:
    """Revoke a token; its next request is answered 401."""
    database = database_for(settings)
    with database.session() as session:
        row = revoke_token(session, token_id)
        if row is None:
            raise click.ClickException(f"no token with id {token_id}")
        session.commit()
    info(f"revoked token {token_id}")


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
