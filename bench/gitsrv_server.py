"""Run `gitsrv serve` on 127.0.0.1 for the benchmark, and its admin commands.

The server is started from the same `gitsrv` package that this process
imports, so a benchmark run from a checkout measures that checkout.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import gitsrv

# Every source scope, so that the benchmark's pushes are never rejected.
ALL_SOURCE_SCOPES = ("source:read", "source:read-update", "source:create", "source:delete")
PACKAGE_PARENT = str(Path(gitsrv.__file__).resolve().parent.parent)


class GitsrvError(RuntimeError):
    """A gitsrv command failed or the server did not start."""


class GitsrvServer:
    """A `gitsrv serve` subprocess with its data folder under `data_dir`."""

    def __init__(self, data_dir: Path, port: int, log_path: Path) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.port = port
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def repos_dir(self) -> Path:
        return self.data_dir / "repos"

    @property
    def pack_cache_dir(self) -> Path:
        return self.data_dir / "cache" / "packs"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def main_pid(self) -> int:
        """Return the PID of the gunicorn master process; raise GitsrvError when it is not running."""
        if self.process is None or self.process.poll() is not None:
            raise GitsrvError("gitsrv is not running")
        return self.process.pid

    def environ(self) -> dict[str, str]:
        environ = {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}
        # The benchmark always uses the embedded SQLite database in the data folder.
        environ.pop("GITSRV_DATABASE_URL", None)
        environ["GITSRV_DATA"] = str(self.data_dir)
        environ["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_PARENT, environ.get("PYTHONPATH")]))
        return environ

    def settings_text(self) -> str:
        """List the GITSRV_* settings the server inherits from this environment, or name the defaults."""
        inherited = sorted(
            f"{key}={value}" for key, value in self.environ().items() if key.startswith("GITSRV_") and key != "GITSRV_DATA"
        )
        return " ".join(inherited) if inherited else "defaults (no GITSRV_* variables set)"

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "gitsrv", *args]

    def cli(self, *args: str, timeout: float = 60) -> str:
        """Run one gitsrv command against the data folder and return its stdout."""
        result = subprocess.run(
            self.command(*args),
            env=self.environ(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise GitsrvError(f"gitsrv {' '.join(args)} exited with {result.returncode}: {result.stderr.strip()}")
        return result.stdout

    def create_token(self, name: str = "bench") -> str:
        scope_args = [arg for scope in ALL_SOURCE_SCOPES for arg in ("--scope", scope)]
        return self.cli("token", "create", "--name", name, *scope_args).strip()

    def create_repository(self, name: str) -> Path:
        self.cli("repo", "create", name)
        return self.repos_dir / f"{name}.git"

    def serve_command(self) -> list[str]:
        return self.command("serve", "--bind", f"127.0.0.1:{self.port}", "--data", str(self.data_dir))

    def start(self, timeout: float = 60) -> None:
        """Start the server and wait until GET /healthz returns 200."""
        self.repos_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        try:
            # A session of its own keeps a Ctrl-C in the terminal from reaching
            # the server directly; stop() ends it.
            self.process = subprocess.Popen(
                self.serve_command(),
                env=self.environ(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise GitsrvError(f"gitsrv serve exited with {self.process.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(self.base_url + "/healthz", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise GitsrvError(f"gitsrv did not respond to {self.base_url}/healthz within {timeout} s; see {self.log_path}")

    def stop(self, timeout: float = 45) -> None:
        """Stop the server by its PID: SIGTERM, then SIGKILL after `timeout` seconds.

        gunicorn lets requests finish for up to 30 s (its graceful timeout)
        before it stops the workers.
        """
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            raise GitsrvError(f"gitsrv PID {self.process.pid} did not stop within {timeout} s and was killed") from None
