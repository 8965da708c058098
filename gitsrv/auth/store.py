"""Create, look up, list and revoke API tokens in the database."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from gitsrv.access.scopes import Scope, format_scopes, load_stored_scopes
from gitsrv.auth.tokens import generate_token, hash_token, is_well_formed
from gitsrv.db.models import OAuthApp, Token, as_utc, utcnow

# Each process writes a token's last-used time at most once per this many seconds.
LAST_USED_RESOLUTION = 60.0


@dataclass(frozen=True)
class Identity:
    """The authenticated token of a request, without its secret."""

    token_id: int
    name: str
    scopes: frozenset[Scope]
    repo_limits: tuple[str, ...] = ()
    ref_limits: tuple[str, ...] = ()
    expires_at: dt.datetime | None = None
    app_id: int | None = None


def limits_of(text: str) -> tuple[str, ...]:
    return tuple(json.loads(text or "[]"))


def identity_of(row: Token) -> Identity:
    return Identity(
        token_id=row.id,
        name=row.name,
        scopes=load_stored_scopes(row.scopes),
        repo_limits=limits_of(row.repo_limits),
        ref_limits=limits_of(row.ref_limits),
        expires_at=as_utc(row.expires_at),
        app_id=row.app_id,
    )


def create_token(
    session: Session,
    name: str,
    scopes: Iterable[Scope],
    *,
    expires_at: dt.datetime | None = None,
    repo_limits: Sequence[str] = (),
    ref_limits: Sequence[str] = (),
    app_id: int | None = None,
    secret: str | None = None,
) -> tuple[Token, str]:
    """Store a new token and return the row and the secret, shown only once.

    `secret` stores a token generated elsewhere (an OAuth2 access token).
    """
    secret = secret or generate_token()
    row = Token(
        name=name,
        token_hash=hash_token(secret),
        scopes=format_scopes(scopes),
        expires_at=expires_at,
        repo_limits=json.dumps(list(repo_limits)),
        ref_limits=json.dumps(list(ref_limits)),
        app_id=app_id,
    )
    session.add(row)
    session.flush()
    return row, secret


def is_usable(row: Token, now: dt.datetime) -> bool:
    """Check that a token is not revoked, not expired and not issued to a revoked app."""
    if row.revoked_at is not None:
        return False
    expires_at = as_utc(row.expires_at)
    if expires_at is not None and expires_at <= now:
        return False
    if row.app is not None and row.app.revoked_at is not None:
        return False
    return True


def authenticate(session: Session, presented: str) -> Identity | None:
    """Return the identity of a presented token, or None if it is not valid.

    A malformed token or a bad checksum is rejected without a database
    lookup; otherwise one indexed lookup by hash decides.
    """
    if not is_well_formed(presented):
        return None
    row = session.scalar(
        select(Token).outerjoin(OAuthApp, Token.app_id == OAuthApp.id).where(Token.token_hash == hash_token(presented))
    )
    if row is None or not is_usable(row, utcnow()):
        return None
    return identity_of(row)


class LastUsedTracker:
    """Record when tokens were last used, with few database writes.

    Each process writes a token's time at most once per LAST_USED_RESOLUTION,
    and the UPDATE only matches when no process wrote it within that time.
    """

    def __init__(self) -> None:
        self._written: dict[int, float] = {}
        self._lock = threading.Lock()

    def due(self, token_id: int) -> bool:
        now = time.monotonic()
        with self._lock:
            if now - self._written.get(token_id, -LAST_USED_RESOLUTION) < LAST_USED_RESOLUTION:
                return False
            self._written[token_id] = now
            return True

    def record(self, session: Session, token_id: int) -> None:
        now = utcnow()
        cutoff = now - dt.timedelta(seconds=LAST_USED_RESOLUTION)
        session.execute(
            update(Token)
            .where(Token.id == token_id, or_(Token.last_used_at.is_(None), Token.last_used_at < cutoff))
            .values(last_used_at=now)
        )
        session.commit()


def list_tokens(session: Session, include_access_tokens: bool = False) -> list[Token]:
    query = select(Token).order_by(Token.id)
    if not include_access_tokens:
        query = query.where(Token.app_id.is_(None))
    return list(session.scalars(query))


def revoke_token(session: Session, token_id: int) -> Token | None:
    """Mark a token revoked; return None when no token has that id."""
    row = session.get(Token, token_id)
    if row is not None and row.revoked_at is None:
        row.revoked_at = utcnow()
    return row
