"""Serve a folder of bare repositories with `git http-backend` under Apache 2.4.

This is the reference server of the benchmark: stock git behind Debian's
Apache with the event MPM and mod_cgid, no authentication. Everything it
needs (configuration, PID file, logs, CGI socket, the HOME of the CGI) lives
in one state folder, so several instances can run next to each other and
next to a system Apache.

When started as root, Apache runs its children and the CGI as `www-data`.
The repositories must then belong to that user for pushes to work, which
`ReferenceServer.hand_over` arranges.

Usage as a script (Debian: `apt-get install -y apache2`)::

    python3 -m bench.apache --state DIR --root REPOS --port 8081 start
    python3 -m bench.apache --state DIR stop
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

APACHE = os.environ.get("BENCH_APACHE", "apache2")
MODULES_DIR = Path("/usr/lib/apache2/modules")
HTTP_BACKEND = Path("/usr/lib/git-core/git-http-backend")
RUN_AS = "www-data"

MODULES = {
    "mpm_event_module": "mod_mpm_event.so",
    "authz_core_module": "mod_authz_core.so",
    "alias_module": "mod_alias.so",
    "env_module": "mod_env.so",
    "cgid_module": "mod_cgid.so",
}

# The server-side git settings, passed to git-http-backend as
# GIT_CONFIG_COUNT/KEY/VALUE so that no system or repository config is needed.
GIT_CONFIG = {
    "http.receivepack": "true",
    "uploadpack.allowFilter": "true",
    "receive.advertisePushOptions": "true",
}


class ApacheError(RuntimeError):
    """Apache could not be configured, started or stopped."""


def apache_version() -> str:
    """Return the `Server version:` line of `apache2 -v`, or why it is unavailable."""
    try:
        result = subprocess.run([APACHE, "-v"], capture_output=True, text=True, timeout=30, check=False)
    except FileNotFoundError:
        return f"{APACHE} not found"
    for line in result.stdout.splitlines():
        if line.startswith("Server version:"):
            return line.split(":", 1)[1].strip()
    return result.stdout.strip() or result.stderr.strip()


def _is_running(pid: int) -> bool:
    """Return whether `pid` is a live process. A zombie counts as stopped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # The state letter follows the parenthesised command name.
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _reap(pid: int) -> None:
    """Collect the exit status of `pid` if it is a child of this process.

    The Apache parent daemonizes, so it is a child here only when this
    process is a child subreaper (see bench.run.become_subreaper).
    """
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


class ReferenceServer:
    """One Apache instance serving `project_root` on 127.0.0.1:`port`."""

    def __init__(self, state_dir: Path, project_root: Path | None = None, port: int = 0) -> None:
        self.state_dir = Path(state_dir).absolute()
        self.project_root = Path(project_root).absolute() if project_root else None
        self.port = port
        self.run_as = RUN_AS if os.geteuid() == 0 else None

    @property
    def config_path(self) -> Path:
        return self.state_dir / "apache2.conf"

    @property
    def pid_path(self) -> Path:
        return self.state_dir / "apache2.pid"

    @property
    def error_log(self) -> Path:
        return self.state_dir / "error.log"

    @property
    def home(self) -> Path:
        return self.state_dir / "home"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, repo: str) -> str:
        return f"{self.base_url}/{repo}"

    def pid(self) -> int | None:
        """Return the PID of the Apache parent process from its PID file, or None."""
        try:
            return int(self.pid_path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def main_pid(self) -> int:
        """Return the PID of the running Apache parent process; raise ApacheError when it is not running."""
        pid = self.pid()
        if pid is None or not _is_running(pid):
            raise ApacheError(f"Apache from {self.state_dir} is not running")
        return pid

    def config_text(self) -> str:
        if self.project_root is None or not self.port:
            raise ApacheError("cannot write the Apache configuration: a project root and a port are required")
        state = self.state_dir
        lines = [
            "# Written by bench/apache.py for the gitsrv benchmark; rewritten on every start.",
            f'ServerRoot "{state}"',
            "ServerName 127.0.0.1",
            f"Listen 127.0.0.1:{self.port}",
            f'PidFile "{self.pid_path}"',
            f'DefaultRuntimeDir "{state / "run"}"',
            f'ErrorLog "{self.error_log}"',
            "LogLevel warn",
            # Seconds of I/O inactivity before Apache gives up on a client or CGI.
            "Timeout 300",
            "KeepAlive On",
            "",
        ]
        for name, filename in MODULES.items():
            lines.append(f"LoadModule {name} {MODULES_DIR / filename}")
        lines.append("")
        if self.run_as:
            lines += [f"User {self.run_as}", f"Group {self.run_as}", ""]
        lines += [
            # The event MPM: 2 processes of 25 threads at start, at most 150
            # requests at once.
            "StartServers 2",
            "ThreadsPerChild 25",
            "MaxRequestWorkers 150",
            f'ScriptSock "{state / "run" / "cgid.sock"}"',
            f'DocumentRoot "{state / "htdocs"}"',
            "",
            "<Directory />",
            "    Require all denied",
            "</Directory>",
            f'<Directory "{HTTP_BACKEND.parent}">',
            "    Require all granted",
            "</Directory>",
            "",
            f'SetEnv GIT_PROJECT_ROOT "{self.project_root}"',
            "SetEnv GIT_HTTP_EXPORT_ALL 1",
            f'SetEnv HOME "{self.home}"',
            f"SetEnv GIT_CONFIG_COUNT {len(GIT_CONFIG)}",
        ]
        for index, (key, value) in enumerate(GIT_CONFIG.items()):
            lines.append(f"SetEnv GIT_CONFIG_KEY_{index} {key}")
            lines.append(f"SetEnv GIT_CONFIG_VALUE_{index} {value}")
        lines += ["", f"ScriptAlias / {HTTP_BACKEND}/", ""]
        return "\n".join(lines)

    def write_config(self) -> Path:
        """Create the state folder and write the Apache configuration; return its path."""
        for folder in (self.state_dir, self.state_dir / "run", self.state_dir / "htdocs", self.home):
            folder.mkdir(parents=True, exist_ok=True)
            # The CGI runs as www-data and must reach HOME and the socket folder.
            folder.chmod(0o755)
        # git refuses repositories owned by another user unless safe.directory allows them.
        (self.home / ".gitconfig").write_text("[safe]\n\tdirectory = *\n")
        self.config_path.write_text(self.config_text())
        return self.config_path

    def hand_over(self, path: Path) -> None:
        """Give `path` and everything under it to the user the CGI runs as, if any."""
        if self.run_as is None:
            return
        shutil.chown(path, self.run_as, self.run_as)
        for current, dirs, files in os.walk(path):
            for name in dirs + files:
                shutil.chown(os.path.join(current, name), self.run_as, self.run_as)

    def start(self, timeout: float = 30) -> None:
        """Start Apache and wait until it accepts connections."""
        if not HTTP_BACKEND.exists():
            raise ApacheError(f"{HTTP_BACKEND} not found; install git")
        if shutil.which(APACHE) is None:
            raise ApacheError(f"{APACHE} not found; install it with: apt-get update && apt-get install -y apache2")
        old_pid = self.pid()
        if old_pid is not None and _is_running(old_pid):
            raise ApacheError(f"Apache from {self.state_dir} is already running as PID {old_pid}")
        self.pid_path.unlink(missing_ok=True)
        self.write_config()
        result = subprocess.run(
            [APACHE, "-f", str(self.config_path), "-k", "start"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise ApacheError(f"{APACHE} -k start failed ({result.returncode}): {result.stderr.strip()}{self._log_tail()}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self.pid()
            if pid is not None and _is_running(pid) and self._accepts_connections():
                return
            time.sleep(0.1)
        raise ApacheError(f"Apache did not accept connections on {self.base_url} within {timeout} s{self._log_tail()}")

    def _accepts_connections(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def _log_tail(self, lines: int = 10) -> str:
        try:
            text = self.error_log.read_text(errors="replace").splitlines()[-lines:]
        except FileNotFoundError:
            return ""
        return "\nlast lines of " + str(self.error_log) + ":\n" + "\n".join(text)

    def stop(self, timeout: float = 30) -> None:
        """Stop Apache by the PID in its PID file: SIGTERM, then SIGKILL after `timeout` seconds."""
        pid = self.pid()
        if pid is None or not _is_running(pid):
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _is_running(pid):
                _reap(pid)
                return
            time.sleep(0.1)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        _reap(pid)
        raise ApacheError(f"Apache PID {pid} did not stop within {timeout} s after SIGTERM and was killed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m bench.apache", description="Start or stop git http-backend under Apache on 127.0.0.1."
    )
    parser.add_argument("--state", type=Path, required=True, help="Folder for the configuration, PID file and logs.")
    parser.add_argument("--root", type=Path, help="Folder of bare repositories to serve (GIT_PROJECT_ROOT); needed to start.")
    parser.add_argument("--port", type=int, default=8081, help="TCP port on 127.0.0.1 (default %(default)s).")
    parser.add_argument("action", choices=("start", "stop"))
    args = parser.parse_args(argv)
    server = ReferenceServer(args.state, args.root, args.port)
    try:
        if args.action == "start":
            if args.root is None:
                parser.error("start requires --root")
            server.start()
            print(f"{apache_version()} serving {args.root} on {server.base_url} as PID {server.pid()}")
        else:
            server.stop()
    except ApacheError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
