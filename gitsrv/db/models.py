"""Database tables: tokens, pushes, webhook targets, events and deliveries."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def as_utc(moment: dt.datetime | None) -> dt.datetime | None:
    """Attach UTC to a stored time: SQLite returns naive datetimes, and every stored time is UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=dt.timezone.utc)


class Base(DeclarativeBase):
    pass


class OAuthApp(Base):
    """An OAuth2 client that exchanges its credentials for access tokens."""

    __tablename__ = "oauth_apps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    client_id: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class Token(Base):
    """An API token or OAuth2 access token; only the SHA-256 of the secret is stored."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    # Space-separated scope names, as format_scopes() writes them.
    scopes: Mapped[str] = mapped_column(Text, default="")
    # JSON lists of glob patterns; an empty list means no limit.
    repo_limits: Mapped[str] = mapped_column(Text, default="[]")
    ref_limits: Mapped[str] = mapped_column(Text, default="[]")
    # Set for access tokens issued to an OAuth2 application.
    app_id: Mapped[int | None] = mapped_column(ForeignKey("oauth_apps.id"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    app: Mapped[OAuthApp | None] = relationship()


class AuthFailure(Base):
    """One request that presented an invalid token, for rate limiting by address."""

    __tablename__ = "auth_failures"
    __table_args__ = (Index("ix_auth_failures_addr_time", "remote_addr", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    remote_addr: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class Push(Base):
    """One receive-pack request that sent at least one ref update."""

    __tablename__ = "pushes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_id: Mapped[int | None] = mapped_column(ForeignKey("tokens.id"))
    repository: Mapped[str] = mapped_column(String(1000), index=True)
    remote_addr: Mapped[str | None] = mapped_column(String(64))
    # JSON list of the push options the client sent.
    push_options: Mapped[str] = mapped_column(Text, default="[]")
    atomic: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    ref_updates: Mapped[list[PushRefUpdate]] = relationship(
        back_populates="push", order_by="PushRefUpdate.id"
    )


class PushRefUpdate(Base):
    """One ref update of a push with its classification and verdict."""

    __tablename__ = "push_ref_updates"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    push_id: Mapped[int] = mapped_column(ForeignKey("pushes.id"), index=True)
    ref: Mapped[str] = mapped_column(Text)
    old: Mapped[str] = mapped_column(String(64))
    new: Mapped[str] = mapped_column(String(64))
    classification: Mapped[str] = mapped_column(String(20))
    # "ok" when the ref was changed, "rejected" by policy, "failed" when the
    # ref could not be changed (for example a stale old value).
    status: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(Text)

    push: Mapped[Push] = relationship(back_populates="ref_updates")


class WebhookTarget(Base):
    """A URL that receives signed CI events."""

    __tablename__ = "webhook_targets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    # HMAC key for X-Gitsrv-Signature-256; kept in clear because signing needs it.
    secret: Mapped[str] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(default=True)
    # JSON lists of glob patterns; an empty list matches everything.
    repo_filters: Mapped[str] = mapped_column(Text, default="[]")
    ref_filters: Mapped[str] = mapped_column(Text, default="[]")
    # Deliver even when the host resolves to a link-local, multicast or
    # unspecified address.
    allow_unsafe_address: Mapped[bool] = mapped_column(default=False)
    # Events given up in a row; reaching the configured limit disables the target.
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Event(Base):
    """A CI event; `body` contains the exact JSON bytes that are signed and sent."""

    __tablename__ = "events"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    repository: Mapped[str] = mapped_column(String(1000), index=True)
    push_id: Mapped[int | None] = mapped_column(ForeignKey("pushes.id"))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    # Why the event was recorded but not delivered (a skip marker), if so.
    skip_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    deliveries: Mapped[list[Delivery]] = relationship(back_populates="event")


class Delivery(Base):
    """The delivery state of one event to one webhook target."""

    __tablename__ = "deliveries"
    __table_args__ = (Index("ix_deliveries_due", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("events.id"), index=True)
    target_id: Mapped[int] = mapped_column(ForeignKey("webhook_targets.id"), index=True)
    # "pending" until a 2xx response ("delivered") or until retries run out ("failed").
    state: Mapped[str] = mapped_column(String(20), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # A worker that claims the delivery owns it until this time, so a crashed
    # worker's claim lapses on its own.
    lease_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    event: Mapped[Event] = relationship(back_populates="deliveries")
    target: Mapped[WebhookTarget] = relationship()
    attempt_log: Mapped[list[DeliveryAttempt]] = relationship(
        back_populates="delivery", order_by="DeliveryAttempt.number"
    )


class DeliveryAttempt(Base):
    """One HTTP attempt of a delivery and what came back."""

    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("deliveries.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    response_excerpt: Mapped[str | None] = mapped_column(Text)

    delivery: Mapped[Delivery] = relationship(back_populates="attempt_log")
