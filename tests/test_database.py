"""Migrations on SQLite and PostgreSQL, and two servers sharing one PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import urllib.request

import pytest
from sqlalchemy import create_engine, inspect, text

from gitsrv.db.engine import MIGRATIONS_DIR
from tests import pgserver
from tests.conftest import Server, free_port

EXPECTED_TABLES = {
    "tokens", "oauth_apps", "auth_failures", "pushes", "push_ref_updates",
    "webhook_targets", "events", "deliveries", "delivery_attempts", "alembic_version",
}


def head_revision() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(config).get_current_head()


def run_cli(*args: str, database_url: str, data_dir) -> subprocess.CompletedProcess[str]:
    import os

    environ = {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}
    environ.update(GITSRV_DATA=str(data_dir), GITSRV_DATABASE_URL=database_url)
    return subprocess.run([sys.executable, "-m", "gitsrv", *args], env=environ, capture_output=True, text=True, timeout=120)


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    admin = request.getfixturevalue("postgres_admin")
    return pgserver.create_database(admin, f"gitsrv_migrate_{tmp_path.name[-20:].lower()}")


def test_migrations_from_empty_database(empty_database, tmp_path):
    first = run_cli("db", "upgrade", database_url=empty_database, data_dir=tmp_path)
    assert first.returncode == 0, first.stderr
    assert f"to {head_revision()}" in first.stderr

    engine = create_engine(empty_database)
    try:
        assert EXPECTED_TABLES <= set(inspect(engine).get_table_names())
        with engine.connect() as connection:
            assert connection.execute(text("select version_num from alembic_version")).scalar() == head_revision()
    finally:
        engine.dispose()

    again = run_cli("db", "upgrade", database_url=empty_database, data_dir=tmp_path)
    assert again.returncode == 0
    assert "up to date" in again.stderr


def test_migrations_downgrade_and_upgrade(empty_database, tmp_path):
    from alembic import command

    from gitsrv.db.migrate import alembic_config, upgrade

    engine = create_engine(empty_database)
    try:
        upgrade(engine)
        command.downgrade(alembic_config(engine), "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        upgrade(engine)
        assert EXPECTED_TABLES <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_serve_refuses_postgres_database_behind(postgres_admin, tmp_path):
    url = pgserver.create_database(postgres_admin, "gitsrv_behind")

    result = run_cli("serve", "--bind", f"127.0.0.1:{free_port()}", database_url=url, data_dir=tmp_path)

    assert result.returncode != 0
    assert "run `gitsrv db upgrade`" in result.stderr
    assert "revision none" in result.stderr


def test_serve_migrates_embedded_sqlite_on_start(tmp_path):
    server = Server(data_dir=tmp_path / "fresh", port=free_port())
    server.start()
    try:
        engine = create_engine(f"sqlite:///{server.data_dir / 'gitsrv.db'}")
        with engine.connect() as connection:
            assert connection.execute(text("select version_num from alembic_version")).scalar() == head_revision()
        engine.dispose()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def shared_servers(postgres_url, tmp_path_factory):
    """Two `gitsrv serve` processes on one PostgreSQL database and one repos folder."""
    data_dir = tmp_path_factory.mktemp("shared") / "data"
    upgraded = run_cli("db", "upgrade", database_url=postgres_url, data_dir=data_dir)
    assert upgraded.returncode == 0, upgraded.stderr
    servers = [
        Server(data_dir=data_dir, port=free_port(), env={"GITSRV_DATABASE_URL": postgres_url}),
        Server(data_dir=data_dir, port=free_port(), env={"GITSRV_DATABASE_URL": postgres_url}),
    ]
    for server in servers:
        server.start()
    yield servers
    for server in servers:
        server.stop()


def status_of(url: str, token: str) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_two_servers_share_tokens_and_revocations(shared_servers):
    first, second = shared_servers
    first.cli("repo", "create", "shared/demo")
    created = first.cli("token", "create", "--name", "shared", "--scope", "source:read")
    token = created.stdout.strip()
    token_id = created.stderr.split("created token ")[1].split()[0]
    paths = [f"{server.base_url}/shared/demo.git/info/refs?service=git-upload-pack" for server in shared_servers]

    assert [status_of(path, token) for path in paths] == [200, 200]

    second.cli("token", "revoke", token_id)

    assert [status_of(path, token) for path in paths] == [401, 401]


def test_push_on_one_server_clone_from_other(shared_servers, git, tmp_path):
    first, second = shared_servers
    first.cli("repo", "create", "shared/pushed")
    token = first.token("source:read", "source:read-update", "source:create", name="pusher")
    work = tmp_path / "work"
    git.run("init", "-q", str(work))
    (work / "file.txt").write_text("content\n")
    git.run("add", "file.txt", cwd=work)
    git.run("commit", "-q", "-m", "first", cwd=work)
    tip = git.out("rev-parse", "HEAD", cwd=work)

    git.run("push", "-q", first.url("shared/pushed", token), "main", cwd=work)
    git.run("clone", "-q", second.url("shared/pushed", token), str(tmp_path / "clone"))

    assert git.out("rev-parse", "HEAD", cwd=tmp_path / "clone") == tip
    audit = second.cli("audit", "--repo", "shared/pushed").stdout
    assert "ok       create     refs/heads/main" in audit


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path):
    """A migrated, empty gitsrv database on SQLite or PostgreSQL."""
    from gitsrv.config import load_settings
    from gitsrv.db.ready import open_database

    settings = load_settings(tmp_path / "data")
    if request.param == "postgresql":
        import dataclasses

        admin = request.getfixturevalue("postgres_admin")
        url = pgserver.create_database(admin, f"gitsrv_store_{tmp_path.name[-20:].lower()}")
        settings = dataclasses.replace(settings, database_url=url)
        run_cli("db", "upgrade", database_url=url, data_dir=tmp_path)
    opened = open_database(settings)
    yield opened
    opened.dispose()


def test_token_store_lifecycle(database):
    import datetime as dt

    from gitsrv.access.scopes import Scope
    from gitsrv.auth.apps import create_app, revoke_app
    from gitsrv.auth.store import authenticate, create_token, revoke_token
    from gitsrv.db.models import utcnow

    with database.session() as session:
        active, active_secret = create_token(session, "active", {Scope.SOURCE_READ}, repo_limits=["a/*"], ref_limits=["refs/heads/x"])
        _expired, expired_secret = create_token(session, "expired", {Scope.SOURCE_READ}, expires_at=utcnow() - dt.timedelta(seconds=1))
        revoked, revoked_secret = create_token(session, "revoked", {Scope.SOURCE_READ})
        app, _ = create_app(session, "app", {Scope.SOURCE_READ})
        _access, access_secret = create_token(session, "oauth:app", {Scope.SOURCE_READ}, app_id=app.id,
                                              expires_at=utcnow() + dt.timedelta(hours=1))
        session.commit()
        revoke_token(session, revoked.id)
        session.commit()

    with database.session() as session:
        identity = authenticate(session, active_secret)
        assert identity is not None
        assert identity.token_id == active.id
        assert identity.scopes == {Scope.SOURCE_READ}
        assert identity.repo_limits == ("a/*",)
        assert identity.ref_limits == ("refs/heads/x",)
        assert authenticate(session, expired_secret) is None
        assert authenticate(session, revoked_secret) is None
        assert authenticate(session, access_secret) is not None

        revoke_app(session, app.id)
        session.commit()
        assert authenticate(session, access_secret) is None


def test_last_used_written_once_per_minute(database):
    from gitsrv.access.scopes import Scope
    from gitsrv.auth.store import LastUsedTracker, create_token
    from gitsrv.db.models import Token

    with database.session() as session:
        row, _ = create_token(session, "used", {Scope.SOURCE_READ})
        session.commit()
        token_id = row.id
    tracker = LastUsedTracker()

    assert tracker.due(token_id)
    with database.session() as session:
        tracker.record(session, token_id)
    with database.session() as session:
        first = session.get(Token, token_id).last_used_at
    assert first is not None
    assert not tracker.due(token_id)
    # Another process's tracker is due, but the UPDATE matches nothing within the minute.
    with database.session() as session:
        LastUsedTracker().record(session, token_id)
    with database.session() as session:
        assert session.get(Token, token_id).last_used_at == first


def test_failure_limiter_counts_across_instances(database):
    from gitsrv.auth.ratelimit import FailureLimiter

    first = FailureLimiter(database, limit=3, window=60)
    second = FailureLimiter(database, limit=3, window=60)

    assert first.record_failure("192.0.2.1") == 1
    assert second.record_failure("192.0.2.1") == 2
    assert first.retry_after("192.0.2.1") is None
    assert first.record_failure("192.0.2.1") == 3
    assert first.retry_after("192.0.2.1") > 0
    assert second.is_over_limit(second.record_failure("192.0.2.1"))
    assert first.record_failure("198.51.100.7") == 1
