"""Helpers shared by the gitsrv commands: settings, database, output."""

from __future__ import annotations

import datetime as dt
import functools

import click

from gitsrv.access.scopes import InvalidScopeError, parse_scopes
from gitsrv.config import Settings, load_settings
from gitsrv.db.engine import Database
from gitsrv.db.models import as_utc
from gitsrv.db.ready import SchemaBehindError, open_database

DATA_HELP = "Data folder: repos/ and the SQLite database gitsrv.db. [env: GITSRV_DATA; default: ./gitsrv-data]"


def with_settings(command):
    """Add --data to a command and pass the resulting Settings as `settings`.

    `--data` after the subcommand wins over `gitsrv --data DIR`, which wins
    over GITSRV_DATA.
    """

    @click.option("--data", "data_dir", metavar="DIR", help=DATA_HELP)
    @functools.wraps(command)
    def wrapper(*args, data_dir=None, **kwargs):
        chosen = data_dir or click.get_current_context().find_root().params.get("data_dir")
        try:
            settings = load_settings(chosen)
        except ValueError as error:
            raise click.ClickException(str(error)) from None
        return command(*args, settings=settings, **kwargs)

    return wrapper


def database_for(settings: Settings) -> Database:
    try:
        return open_database(settings)
    except SchemaBehindError as error:
        raise click.ClickException(str(error)) from None


def info(message: str) -> None:
    click.echo(message, err=True)


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


