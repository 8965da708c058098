"""Shared test fixtures: a real `gitsrv serve` on 127.0.0.1 and the git CLI."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gitsrv.access.scopes import parse_scopes
from gitsrv.auth.store import create_token
from gitsrv.config import load_settings
from gitsrv.db.ready import open_database

REPO_ROOT = Path(__file__).resolve().parent.parent
ZERO_ID = "0" * 40


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def git_environ(home: Path) -> dict[str, str]:
    """An environment where git reads only the test's own configuration."""
    environ = {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}
    environ.update(
        HOME=str(home),
        GIT_CONFIG_NOSYSTEM="1",
        GIT_TERMINAL_PROMPT="0",
        GIT_AUTHOR_NAME="Test Author",
        GIT_AUTHOR_EMAIL="author@example.com",
        GIT_COMMITTER_NAME="Test Committer",
        GIT_COMMITTER_EMAIL="committer@example.com",
    )
    for key in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        environ.pop(key, None)
    return environ


@dataclass
class Git:
    """Runs the real git CLI with an isolated HOME."""

    home: Path
    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / ".gitconfig").write_text(
            "[init]\n\tdefaultBranch = main\n[advice]\n\tdetachedHead = false\n"
            "[credential]\n\thelper =\n[protocol]\n\tversion = 2\n"
        )

    def run(self, *args: str, cwd: Path | None = None, check: bool = True, env: dict[str, str] | None = None,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        environ = git_environ(self.home)
        environ.update(self.extra_env)
        environ.update(env or {})
        result = subprocess.run(
            ["git", *args],
            cwd=cwd,
            env=environ,
            capture_output=True,
            text=True,
            input=input,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"git {' '.join(args)} exited with {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    def out(self, *args: str, cwd: Path | None = None) -> str:
        return self.run(*args, cwd=cwd).stdout.strip()


@dataclass
class Server:
    """A `gitsrv serve` subprocess and its data folder."""

    data_dir: Path
    port: int
    scheme: str = "http"
    process: subprocess.Popen | None = None
    log_path: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    serve_args: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def url(self, repo: str, token: str | None = None, user: str = "git") -> str:
        if token is None:
            return f"{self.base_url}/{repo}"
        return f"{self.scheme}://{user}:{token}@127.0.0.1:{self.port}/{repo}"

    @property
    def repos_dir(self) -> Path:
        return self.data_dir / "repos"

    def environ(self) -> dict[str, str]:
        environ = {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}
        environ.pop("GITSRV_DATABASE_URL", None)
        environ.update(GITSRV_DATA=str(self.data_dir), **self.env)
        return environ

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "gitsrv", *args],
            env=self.environ(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"gitsrv {' '.join(args)} failed:\n{result.stderr}")
        return result

    def settings(self):
        settings = load_settings(self.data_dir)
        url = self.env.get("GITSRV_DATABASE_URL")
        if url:
            return dataclasses.replace(settings, database_url=url)
        return dataclasses.replace(settings, database_url=f"sqlite:///{self.data_dir / 'gitsrv.db'}")

    def token(self, *scopes: str, name: str = "test") -> str:
        """Create a token in the server's database and return its secret."""
        database = open_database(self.settings())
        try:
            with database.session() as session:
                _row, secret = create_token(session, name, parse_scopes(scopes))
                session.commit()
        finally:
            database.dispose()
        return secret

    def start(self) -> None:
        self.log_path = self.data_dir.parent / f"server-{self.port}.log"
        log_file = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gitsrv", "serve", "--bind", f"127.0.0.1:{self.port}",
             "--workers", "2", *self.serve_args],
            env=self.environ(),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log_file.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gitsrv serve exited early:\n{self.log()}")
            try:
                if self.scheme == "http":
                    with urllib.request.urlopen(f"{self.base_url}/healthz", timeout=2) as response:
                        if response.status == 200:
                            return
                else:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=2):
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"gitsrv serve did not answer within 30 s:\n{self.log()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""


def load_builder():
    from tests.fixture_repos import load_builder as load

    return load()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("gitsrv") / "data"
    instance = Server(data_dir=data_dir, port=free_port())
    instance.cli("repo", "list")  # creates and migrates the database
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def git(tmp_path_factory) -> Git:
    return Git(tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="module")
def sample(server, git, tmp_path_factory):
    """The fixture repository built into the server as `sample`, with its ids."""
    builder = load_builder()
    ids = builder.build_sample(server.repos_dir / "sample.git")
    return ids


def copy_sample(server: Server, name: str) -> Path:
    """Copy the module's sample repository to a fresh repository `name`."""
    source = server.repos_dir / "sample.git"
    target = server.repos_dir / f"{name}.git"
    shutil.copytree(source, target)
    return target


@pytest.fixture(scope="session")
def postgres_admin():
    """The SQLAlchemy URL of a throwaway PostgreSQL server's admin database.

    `.ci/run` starts one and passes GITSRV_TEST_POSTGRES_URL; otherwise the
    fixture starts its own with initdb and pg_ctl. Without them the tests are
    skipped, unless GITSRV_REQUIRE_POSTGRES=1 makes that a failure.
    """
    from tests import pgserver

    configured_url = os.environ.get("GITSRV_TEST_POSTGRES_URL")
    if configured_url:
        yield configured_url
        return
    if pgserver.find_binary("initdb") is None:
        if os.environ.get("GITSRV_REQUIRE_POSTGRES") == "1":
            pytest.fail("PostgreSQL is required (GITSRV_REQUIRE_POSTGRES=1) but initdb was not found")
        pytest.skip("initdb not found: PostgreSQL tests need a PostgreSQL server installation")
    import tempfile

    state_dir = Path(tempfile.mkdtemp(prefix="gitsrv-pg-"))
    try:
        yield pgserver.start(state_dir)
    finally:
        pgserver.stop(state_dir)
        shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres_url(postgres_admin, request):
    """An empty PostgreSQL database for one test module."""
    from tests import pgserver

    name = "gitsrv_" + request.module.__name__.rsplit(".", 1)[-1]
    return pgserver.create_database(postgres_admin, name)
