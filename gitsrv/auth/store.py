"""Create, look up, list and revoke API tokens in the database."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from gitsrv.access.scopes import Scope, format_scopes, load_stored_scopes
from gitsrv.auth.tokens import generate_token, hash_token, is_well_formed
from gitsrv.db.models import Token, utcnow


@dataclass(frozen=True)
class Identity:
    """The authenticated token of a request, without its secret."""

    token_id: int
    name: str
    scopes: frozenset[Scope]


def create_token(session: Session, name: str, scopes: Iterable[Scope]) -> tuple[Token, str]:
    """Store a new token and return the row and the secret, shown only once."""
    secret = generate_token()
    row = Token(name=name, token_hash=hash_token(secret), scopes=format_scopes(scopes))
    session.add(row)
    session.flush()
    return row, secret


def authenticate(session: Session, presented: str) -> Identity | None:
    """Return the identity of a presented token, or None if it is not valid.

    A malformed token or a bad checksum is rejected without a database
    lookup; otherwise one indexed lookup by hash decides.
    """
    if not is_well_formed(presented):
        return None
    row = session.scalar(select(Token).where(Token.token_hash == hash_token(presented)))
    if row is None or row.revoked_at is not None:
        return None
    return Identity(row.id, row.name, load_stored_scopes(row.scopes))


def list_tokens(session: Session) -> list[Token]:
    return list(session.scalars(select(Token).order_by(Token.id)))


def revoke_token(session: Session, token_id: int) -> Token | None:
    """Mark a token revoked; return None when no token has that id."""
    row = session.get(Token, token_id)
    if row is not None and row.revoked_at is None:
        row.revoked_at = utcnow()
    return row
