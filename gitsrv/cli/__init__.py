"""The `gitsrv` command: serve, and administer repositories, tokens and webhooks.

Secrets a command creates (a token, a client secret, a webhook secret) go
alone on stdout so that `T=$(gitsrv token create ...)` works; everything else
goes to stderr.
"""

from __future__ import annotations

import logging
import sys

import click

from gitsrv import __version__
from gitsrv.cli.apps import app
from gitsrv.cli.audit import audit
from gitsrv.cli.common import DATA_HELP, database_for, info, with_settings
from gitsrv.cli.repos import repo
from gitsrv.cli.tokens import token
from gitsrv.cli.webhooks import webhook
from gitsrv.config import Settings
from gitsrv.db import migrate
from gitsrv.db.engine import Database


@click.group(
    epilog="The database is the SQLite file DIR/gitsrv.db unless GITSRV_DATABASE_URL "
    "(any SQLAlchemy URL, for example postgresql+psycopg://user@host/gitsrv) is set."
)
@click.version_option(__version__, prog_name="gitsrv")
@click.option("--data", "data_dir", metavar="DIR", help=DATA_HELP)
def main(data_dir: str | None) -> None:
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


for command in (repo, token, app, audit, webhook):
    main.add_command(command)


if __name__ == "__main__":
    sys.exit(main())
