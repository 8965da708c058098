"""Token scopes: the closed set of names a token may carry."""

from __future__ import annotations

import enum
from collections.abc import Iterable


class Scope(str, enum.Enum):
    """One permission a token carries, written `area:level`."""

    SOURCE_READ = "source:read"
    SOURCE_READ_UPDATE = "source:read-update"
    SOURCE_CREATE = "source:create"
    SOURCE_DELETE = "source:delete"
    # The scopes below are stored and shown, but grant nothing on git paths.
    CI_READ = "ci:read"
    CI_READ_UPDATE = "ci:read-update"
    CI_CREATE = "ci:create"
    CI_DELETE = "ci:delete"
    DEVICES_READ = "devices:read"
    DEVICES_READ_UPDATE = "devices:read-update"
    DEVICES_CREATE = "devices:create"
    DEVICES_DELETE = "devices:delete"
    TARGETS_READ = "targets:read"
    TARGETS_READ_UPDATE = "targets:read-update"
    TARGETS_CREATE = "targets:create"
    TARGETS_DELETE = "targets:delete"
    CONTAINERS_READ = "containers:read"
    CONTAINERS_READ_UPDATE = "containers:read-update"
    CONTAINERS_CREATE = "containers:create"
    CONTAINERS_DELETE = "containers:delete"

    def __str__(self) -> str:
        return self.value


VALID_SCOPE_NAMES: tuple[str, ...] = tuple(scope.value for scope in Scope)

# Scopes that let a token open git-receive-pack at all.
PUSH_SCOPES: frozenset[Scope] = frozenset(
    {Scope.SOURCE_READ_UPDATE, Scope.SOURCE_CREATE, Scope.SOURCE_DELETE}
)
# Scopes that let a token clone and fetch.
FETCH_SCOPES: frozenset[Scope] = frozenset({Scope.SOURCE_READ, Scope.SOURCE_READ_UPDATE})


class InvalidScopeError(ValueError):
    """A scope name that gitsrv does not know."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"invalid scope {name!r}; valid scopes: {', '.join(VALID_SCOPE_NAMES)}"
        )
        self.name = name


def parse_scope(name: str) -> Scope:
    """Parse one scope name, raising InvalidScopeError with the valid list."""
    try:
        return Scope(name.strip())
    except ValueError:
        raise InvalidScopeError(name) from None


def parse_scopes(names: Iterable[str]) -> frozenset[Scope]:
    """Parse scope names given one by one or as a comma or space separated list."""
    scopes: set[Scope] = set()
    for item in names:
        for name in item.replace(",", " ").split():
            scopes.add(parse_scope(name))
    return frozenset(scopes)


def format_scopes(scopes: Iterable[Scope]) -> str:
    """Format scopes in a stable order, space separated, as stored and shown."""
    return " ".join(sorted(str(scope) for scope in scopes))


def load_stored_scopes(text: str) -> frozenset[Scope]:
    """Read scopes back from storage, skipping names that this version no longer defines."""
    known = {scope.value: scope for scope in Scope}
    return frozenset(known[name] for name in text.split() if name in known)
