"""`gitsrv token`: create, list, revoke and explain API tokens."""

from __future__ import annotations

import json

import click

from gitsrv.access.explain import explain
from gitsrv.access.scopes import VALID_SCOPE_NAMES, format_scopes
from gitsrv.auth.store import (
    create_token,
    identity_of,
    is_usable,
    limits_of,
    list_tokens,
    revoke_token,
)
from gitsrv.cli.common import (
    database_for,
    format_time,
    info,
    parse_scope_option,
    print_table,
    with_settings,
)
from gitsrv.config import Settings
from gitsrv.db.models import Token, as_utc, utcnow
from gitsrv.durations import parse_duration, parse_moment
from gitsrv.git.repos import InvalidRepoPathError, find_repository, normalize_name


@click.group()
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
@click.option("--expires-in", metavar="DURATION", help="Lifetime, for example 30d, 12h, 45m or 2w.")
@click.option("--expires-at", metavar="DATE", help="Expiry as an ISO 8601 date or time (UTC unless a zone is given).")
@click.option("--repo", "repo_limits", multiple=True, metavar="GLOB",
              help="Limit the token to repositories matching GLOB (repeatable; * matches /). Other repositories respond 404.")
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
    """Revoke a token, so that its next request gets 401 on every server."""
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
    if find_repository(settings.repos_dir, name) is None:
        click.echo(f"note: repository {name} does not exist on this server; these are the token's rights if it did")
    for permission in explain(identity.scopes, identity.repo_limits, identity.ref_limits, name, ref):
        verdict = "allowed" if permission.allowed and usable else "denied"
        reason = permission.reason or ("" if usable else "token is revoked or expired")
        click.echo(f"  {permission.operation:<11} {verdict}" + (f": {reason}" if reason else ""))
