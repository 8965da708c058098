"""Settings shared by every gitsrv command: data folder, database, webhooks."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATA_DIR = "./gitsrv-data"


def _env_float(name: str, default: float, minimum: float = 0.0) -> float:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"invalid {name}={value!r}: expected a number") from None
    if number < minimum:
        raise ValueError(f"invalid {name}={value!r}: must be at least {minimum:g}")
    return number


def _env_switch(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in ("on", "1", "true", "yes"):
        return True
    if value in ("off", "0", "false", "no"):
        return False
    raise ValueError(f"invalid {name}={value!r}: expected on or off")


@dataclass(frozen=True)
class Settings:
    """Settings of one gitsrv installation: data folder, database, limits and webhook delivery.

    `data_dir` contains `repos/` and, unless `database_url` is set, the embedded
    SQLite database `gitsrv.db`.
    """

    data_dir: Path
    database_url: str
    # Seconds before the first webhook retry; later retries double it.
    webhook_backoff: float = 5.0
    # Seconds one webhook attempt may take before it counts as failed.
    webhook_timeout: float = 10.0
    # Seconds after which an undelivered event is given up.
    webhook_max_age: float = 24 * 3600.0
    # Events given up in a row before a webhook target is disabled (0: never).
    webhook_disable_after: int = 10
    # Seconds a push waits for the first webhook attempt before reporting it queued.
    webhook_inline_budget: float = 3.0
    # Commits listed per created or updated branch in a push event.
    webhook_max_commits: int = 100
    # Cache generated packs for repeated identical fetches (see git/pack_cache.py).
    pack_cache: bool = True
    pack_cache_max_bytes: int = 1 << 30
    # Failed authentications from one address within the window before 429.
    auth_failure_limit: int = 10
    auth_failure_window: float = 300.0
    # Seconds an OAuth2 access token is valid.
    access_token_lifetime: int = 3600

    @property
    def repos_dir(self) -> Path:
        return self.data_dir / "repos"

    @property
    def pack_cache_dir(self) -> Path:
        return self.data_dir / "cache" / "packs"

    @property
    def uses_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def load_settings(data_dir: str | os.PathLike[str] | None = None) -> Settings:
    """Build the settings from an explicit data folder or the environment.

    `data_dir` wins over `GITSRV_DATA`; `GITSRV_DATABASE_URL` (any SQLAlchemy
    URL) replaces the SQLite file inside the data folder. Raises ValueError
    for an invalid setting.
    """
    chosen = data_dir or os.environ.get("GITSRV_DATA") or DEFAULT_DATA_DIR
    root = Path(chosen).expanduser().absolute()
    database_url = os.environ.get("GITSRV_DATABASE_URL") or f"sqlite:///{root / 'gitsrv.db'}"
    return Settings(
        data_dir=root,
        database_url=database_url,
        webhook_backoff=_env_float("GITSRV_WEBHOOK_BACKOFF", 5.0),
        webhook_timeout=_env_float("GITSRV_WEBHOOK_TIMEOUT", 10.0, minimum=0.1),
        webhook_max_age=_env_float("GITSRV_WEBHOOK_MAX_AGE", 24 * 3600.0),
        webhook_disable_after=int(_env_float("GITSRV_WEBHOOK_DISABLE_AFTER", 10)),
        webhook_inline_budget=_env_float("GITSRV_WEBHOOK_INLINE_BUDGET", 3.0),
        webhook_max_commits=int(_env_float("GITSRV_WEBHOOK_MAX_COMMITS", 100)),
        pack_cache=_env_switch("GITSRV_PACK_CACHE", True),
        pack_cache_max_bytes=int(_env_float("GITSRV_PACK_CACHE_MAX_MB", 1024) * 1024 * 1024),
        auth_failure_limit=int(_env_float("GITSRV_AUTH_FAILURE_LIMIT", 10)),
        auth_failure_window=_env_float("GITSRV_AUTH_FAILURE_WINDOW", 300.0),
        access_token_lifetime=int(_env_float("GITSRV_ACCESS_TOKEN_LIFETIME", 3600, minimum=1)),
    )
