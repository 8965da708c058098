"""`gitsrv repo`: create and list repositories."""

from __future__ import annotations

import click

from gitsrv.cli.common import info, with_settings
from gitsrv.config import Settings
from gitsrv.git.repos import InvalidRepoPathError, create_repository, list_repositories


@click.group()
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
