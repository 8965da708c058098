"""Start and stop a throwaway PostgreSQL server for the database tests.

Used by the `postgres` fixture and by `.ci/run`:

    python -m tests.pgserver start DIR   # prints the server's SQLAlchemy URL
    python -m tests.pgserver stop DIR

The server listens on 127.0.0.1 on a free port, with trust authentication
and fsync off; it is for tests only. PostgreSQL refuses to run as root, so
when started by root the cluster is owned by and run as the `postgres` user
(or `nobody` when there is none).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
from pathlib import Path

USER = "gitsrv"


def find_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_as_owner(args: list[str], owner: str | None) -> subprocess.CompletedProcess[str]:
    if owner is not None:
        args = ["runuser", "-u", owner, "--", *args]
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def _owner() -> str | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("running as root, and neither a postgres nor a nobody user exists to run PostgreSQL")


def start(state_dir: Path) -> str:
    """Create and start a cluster in `state_dir`; return the SQLAlchemy URL of its admin database."""
    initdb = find_binary("initdb")
    pg_ctl = find_binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise RuntimeError("initdb and pg_ctl were not found on PATH or under /usr/lib/postgresql")
    owner = _owner()
    state_dir.mkdir(parents=True, exist_ok=True)
    data = state_dir / "data"
    if owner is not None:
        state_dir.chmod(0o755)
        entry = pwd.getpwnam(owner)
        os.chown(state_dir, entry.pw_uid, entry.pw_gid)

    result = _run_as_owner(
        [initdb, "-D", str(data), "-A", "trust", "-U", USER, "--no-sync", "-E", "UTF8"], owner
    )
    if result.returncode != 0:
        raise RuntimeError(f"initdb failed:\n{result.stdout}\n{result.stderr}")

    port = _free_port()
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {state_dir} -c fsync=off -c max_connections=200"
    result = _run_as_owner(
        [pg_ctl, "-D", str(data), "-l", str(state_dir / "postgres.log"), "-o", options, "-w", "-t", "60", "start"],
        owner,
    )
    if result.returncode != 0:
        log = (state_dir / "postgres.log").read_text(errors="replace") if (state_dir / "postgres.log").exists() else ""
        raise RuntimeError(f"pg_ctl start failed:\n{result.stdout}\n{result.stderr}\n{log}")
    (state_dir / "port").write_text(str(port))
    return admin_url(state_dir)


def admin_url(state_dir: Path) -> str:
    port = (state_dir / "port").read_text().strip()
    return f"postgresql+psycopg://{USER}@127.0.0.1:{port}/postgres"


def stop(state_dir: Path) -> None:
    pg_ctl = find_binary("pg_ctl")
    data = state_dir / "data"
    if pg_ctl is None or not data.exists():
        return
    _run_as_owner([pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], _owner())


def create_database(admin: str, name: str) -> str:
    """Create an empty database on the server and return its URL."""
    import psycopg

    dsn = admin.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
        connection.execute(f'CREATE DATABASE "{name}"')
    return admin.rsplit("/", 1)[0] + f"/{name}"


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print("usage: python -m tests.pgserver start|stop DIR", file=sys.stderr)
        return 2
    state_dir = Path(argv[1]).absolute()
    if argv[0] == "start":
        print(start(state_dir))
    else:
        stop(state_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
