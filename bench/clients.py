"""git clients for the benchmark: an isolated environment, timed commands, pushers."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

# Seconds any one git command of the benchmark may take before it is killed.
COMMAND_TIMEOUT = 600
PROXY_VARIABLES = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")
# 2024-01-01 00:00:00 UTC; the benchmark's own commits are one minute apart from there.
COMMIT_BASE_TIMESTAMP = 1_704_067_200

CLIENT_CONFIG = """\
[user]
\tname = Bench Client
\temail = bench@example.com
[init]
\tdefaultBranch = main
[gc]
\tauto = 0
[maintenance]
\tauto = false
[credential]
\thelper =
[safe]
\tdirectory = *
"""


class GitCommandError(RuntimeError):
    """A git client command that exited non-zero or timed out."""


class GitClient:
    """Runs the git CLI with its own HOME, no system config, no prompts and no proxies.

    `secrets` are replaced by *** in error messages, so a token inside a
    URL never reaches the output.
    """

    def __init__(self, home: Path, secrets: tuple[str, ...] = ()) -> None:
        self.home = home
        self.secrets = secrets
        home.mkdir(parents=True, exist_ok=True)
        (home / ".gitconfig").write_text(CLIENT_CONFIG)
        environ = {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}
        for key in PROXY_VARIABLES:
            environ.pop(key, None)
        environ.update(
            HOME=str(home),
            XDG_CONFIG_HOME=str(home / ".config"),
            GIT_CONFIG_NOSYSTEM="1",
            GIT_TERMINAL_PROMPT="0",
            no_proxy="127.0.0.1,localhost",
            NO_PROXY="127.0.0.1,localhost",
        )
        self.environ = environ

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def command(self, args: tuple[str, ...], cwd: Path | None) -> list[str]:
        return ["git", *(["-C", str(cwd)] if cwd else []), *args]

    def run(
        self,
        *args: str,
        cwd: Path | None = None,
        input: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float = COMMAND_TIMEOUT,
    ) -> str:
        """Run one git command and return its stdout; raise GitCommandError when it fails."""
        command = self.command(args, cwd)
        try:
            result = subprocess.run(
                command,
                input=input,
                stdin=None if input is not None else subprocess.DEVNULL,
                capture_output=True,
                text=True,
                env={**self.environ, **(env or {})},
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise GitCommandError(self.redact(f"{' '.join(command)} timed out after {timeout} s")) from None
        if result.returncode != 0:
            raise GitCommandError(
                self.redact(f"{' '.join(command)} exited with {result.returncode}: {result.stderr.strip()}")
            )
        return result.stdout

    def timed(self, *args: str, cwd: Path | None = None, timeout: float = COMMAND_TIMEOUT) -> float:
        """Run one git command and return its wall time in seconds."""
        started = time.perf_counter()
        self.run(*args, cwd=cwd, timeout=timeout)
        return time.perf_counter() - started

    def popen(self, *args: str, log: Path) -> subprocess.Popen[bytes]:
        """Start a git command in the background with its output in `log`."""
        with open(log, "wb") as output:
            return subprocess.Popen(
                self.command(args, None),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                env=self.environ,
            )

    def refs(self, git_dir: Path) -> dict[str, str]:
        """Map every ref of a repository to the object it points at."""
        output = self.run("--git-dir", str(git_dir), "for-each-ref", "--format=%(refname) %(objectname)")
        return dict(line.split(" ", 1) for line in output.splitlines())


class Pusher:
    """A bare clone that makes one-file commits on a branch and pushes them to `url`.

    Commits depend only on their number and the parent, so pushers of two
    servers that start from the same repository make the same commits.
    """

    def __init__(self, client: GitClient, path: Path, url: str, branch: str) -> None:
        self.client = client
        self.path = path
        self.url = url
        self.branch = branch

    def clone(self) -> None:
        self.client.run("clone", "--quiet", "--bare", self.url, str(self.path))

    def git(self, *args: str, input: str | None = None, env: dict[str, str] | None = None) -> str:
        return self.client.run("--git-dir", str(self.path), *args, input=input, env=env).strip()

    def commit(self, number: int) -> str:
        """Commit a change of one file on the branch and return the new commit id."""
        ref = f"refs/heads/{self.branch}"
        parent = self.git("rev-parse", ref)
        blob = self.git("hash-object", "-w", "--stdin", input=f"benchmark change {number}\n")
        index = {"GIT_INDEX_FILE": str(self.path / "bench-index")}
        self.git("read-tree", parent, env=index)
        self.git("update-index", "--add", "--cacheinfo", f"100644,{blob},bench-change.txt", env=index)
        tree = self.git("write-tree", env=index)
        stamp = f"{COMMIT_BASE_TIMESTAMP + number * 60} +0000"
        dates = {"GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp}
        commit = self.git("commit-tree", tree, "-p", parent, "-m", f"Benchmark change {number}", env=dates)
        self.git("update-ref", ref, commit, parent)
        return commit

    def push(self) -> float:
        """Push the branch to the server; return the wall time of `git push` in seconds."""
        return self.client.timed("--git-dir", str(self.path), "push", "--quiet", self.url, f"refs/heads/{self.branch}")
