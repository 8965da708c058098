"""OAuth2 applications: client credentials that are exchanged for access tokens."""

from __future__ import annotations

import secrets
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from gitsrv.access.scopes import Scope, format_scopes
from gitsrv.auth.tokens import (
    BASE62,
    CLIENT_SECRET_PREFIX,
    generate_token,
    hash_token,
    is_well_formed,
)
from gitsrv.db.models import OAuthApp, utcnow

CLIENT_ID_PREFIX = "gsvapp_"


def create_app(session: Session, name: str, scopes: Iterable[Scope]) -> tuple[OAuthApp, str]:
    """Store a new application; return the row and its client secret, shown only once."""
    client_id = CLIENT_ID_PREFIX + "".join(secrets.choice(BASE62) for _ in range(20))
    secret = generate_token(CLIENT_SECRET_PREFIX)
    row = OAuthApp(name=name, client_id=client_id, secret_hash=hash_token(secret), scopes=format_scopes(scopes))
    session.add(row)
    session.flush()
    return row, secret


def find_app(session: Session, client_id: str) -> OAuthApp | None:
    """Return the active application with this client id, or None."""
    row = session.scalar(select(OAuthApp).where(OAuthApp.client_id == client_id))
    if row is None or row.revoked_at is not None:
        return None
    return row


def check_secret(row: OAuthApp, secret: str) -> bool:
    if not is_well_formed(secret, CLIENT_SECRET_PREFIX):
        return False
    return secrets.compare_digest(row.secret_hash, hash_token(secret))


def list_apps(session: Session) -> list[OAuthApp]:
    return list(session.scalars(select(OAuthApp).order_by(OAuthApp.id)))


def revoke_app(session: Session, app_id: int) -> OAuthApp | None:
    """Revoke an application; its access tokens stop working at once."""
    row = session.get(OAuthApp, app_id)
    if row is not None and row.revoked_at is None:
        row.revoked_at = utcnow()
    return row
