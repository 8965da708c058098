"""Push to a bare repository that runs the hooks in hooks/ and check what they allow.

Pushes go over a file:// URL, so git runs receive-pack and the hooks locally
and passes the pusher's environment (GITSRV_TOKEN_SCOPES and the others) on
to them.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from gitsrv.hookprogram import main_pre_receive, main_update

HOOKS_DIR = Path(__file__).resolve().parent.parent / "hooks"
ZERO_ID = "0" * 40
ALL_SOURCE_SCOPES = "source:read-update source:create source:delete"

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Test Author",
    "GIT_AUTHOR_EMAIL": "author@example.com",
    "GIT_AUTHOR_DATE": "2024-01-01T00:00:00Z",
    "GIT_COMMITTER_NAME": "Test Committer",
    "GIT_COMMITTER_EMAIL": "committer@example.com",
    "GIT_COMMITTER_DATE": "2024-01-01T00:00:00Z",
}


def base_environ(home: Path) -> dict[str, str]:
    """Return the test process environment without git or gitsrv settings from the caller."""
    environ = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("GIT_", "GITSRV_"))
    }
    environ.update(GIT_IDENTITY)
    environ["HOME"] = str(home)
    environ["GIT_CONFIG_NOSYSTEM"] = "1"
    return environ


@dataclass
class Remote:
    """A bare repository with the hooks and a working clone that pushes to it."""

    bare: Path
    work: Path
    environ: dict[str, str]

    def git(self, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
        result = subprocess.run(
            ["git", *args],
            cwd=cwd or self.work,
            env=env or self.environ,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, f"git {' '.join(args)} failed: {result.stderr}"
        return result.stdout.strip()

    def commit(self, message: str) -> str:
        self.git("commit", "--quiet", "--allow-empty", "-m", message)
        return self.git("rev-parse", "HEAD")

    def ref(self, name: str) -> str | None:
        """Return the object id of `name` in the bare repository, or None if it does not exist."""
        result = subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", name],
            cwd=self.bare,
            env=self.environ,
            capture_output=True,
            text=True,
            check=False,
        )
        return result.stdout.strip() if result.returncode == 0 else None

    def use_hooks(self, hooks_dir: Path) -> None:
        self.git("config", "core.hooksPath", str(hooks_dir), cwd=self.bare)

    def push_without_hooks(self, *refspecs: str) -> None:
        """Push setup commits or tags with the hooks turned off."""
        self.git("config", "--unset", "core.hooksPath", cwd=self.bare)
        self.git("push", "--quiet", "origin", *refspecs)
        self.use_hooks(HOOKS_DIR)

    def push(
        self,
        *refspecs: str,
        scopes: str | None = None,
        ref_limits: str | None = None,
        token_id: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Push with the token variables set; return the finished `git push`."""
        environ = dict(self.environ)
        if scopes is not None:
            environ["GITSRV_TOKEN_SCOPES"] = scopes
        if ref_limits is not None:
            environ["GITSRV_REF_LIMITS"] = ref_limits
        if token_id is not None:
            environ["GITSRV_TOKEN_ID"] = token_id
        return subprocess.run(
            ["git", "push", "origin", *refspecs],
            cwd=self.work,
            env=environ,
            capture_output=True,
            text=True,
            check=False,
        )


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    """Create a bare repository whose main is one commit, with the hooks in hooks/ enabled."""
    environ = base_environ(tmp_path)
    bare = tmp_path / "server.git"
    work = tmp_path / "work"
    subprocess.run(["git", "init", "--quiet", "--bare", "--initial-branch=main", str(bare)], env=environ, check=True)
    subprocess.run(["git", "clone", "--quiet", bare.as_uri(), str(work)], env=environ, check=True, capture_output=True)

    repo = Remote(bare, work, environ)
    repo.git("checkout", "--quiet", "-b", "main")
    repo.commit("first")
    repo.git("push", "--quiet", "origin", "main")
    repo.use_hooks(HOOKS_DIR)
    return repo


def test_hook_files_are_executable() -> None:
    for name in ("pre-receive", "update", "post-receive"):
        assert os.access(HOOKS_DIR / name, os.X_OK), f"hooks/{name} is not executable"


def test_fast_forward_allowed_with_read_update(remote: Remote) -> None:
    first = remote.ref("refs/heads/main")
    # The new commit is only in git's quarantine while pre-receive runs, so
    # this push is accepted only if the hook's git commands see the quarantine.
    second = remote.commit("second")

    result = remote.push("HEAD:refs/heads/main", scopes="source:read-update")

    assert result.returncode == 0, result.stderr
    assert remote.ref("refs/heads/main") == second
    assert f"gitsrv: update refs/heads/main {first}..{second}" in result.stderr


def test_fast_forward_rejected_without_read_update(remote: Remote) -> None:
    first = remote.ref("refs/heads/main")
    remote.commit("second")

    result = remote.push("HEAD:refs/heads/main", scopes="source:create source:delete", token_id="42")

    assert result.returncode != 0
    assert remote.ref("refs/heads/main") == first
    assert "gitsrv: rejected refs/heads/main: update requires scope source:read-update (token 42)" in result.stderr
    assert "pre-receive hook declined" in result.stderr


def test_missing_scopes_variable_rejects(remote: Remote) -> None:
    first = remote.ref("refs/heads/main")
    remote.commit("second")

    result = remote.push("HEAD:refs/heads/main")

    assert result.returncode != 0
    assert remote.ref("refs/heads/main") == first
    assert "gitsrv: rejected refs/heads/main: update requires scope source:read-update" in result.stderr
    assert "GITSRV_TOKEN_SCOPES is not set" in result.stderr


def test_create_requires_source_create(remote: Remote) -> None:
    first = remote.ref("refs/heads/main")

    rejected = remote.push("HEAD:refs/heads/feature", scopes="source:read-update source:delete")

    assert rejected.returncode != 0
    assert remote.ref("refs/heads/feature") is None
    assert "gitsrv: rejected refs/heads/feature: create requires scope source:create" in rejected.stderr

    accepted = remote.push("HEAD:refs/heads/feature", scopes="source:create")

    assert accepted.returncode == 0, accepted.stderr
    assert remote.ref("refs/heads/feature") == first
    assert f"gitsrv: create refs/heads/feature {ZERO_ID}..{first}" in accepted.stderr


def test_delete_requires_source_delete(remote: Remote) -> None:
    first = remote.ref("refs/heads/main")
    remote.git("update-ref", "refs/heads/feature", first, cwd=remote.bare)

    rejected = remote.push(":refs/heads/feature", scopes="source:read-update source:create")

    assert rejected.returncode != 0
    assert remote.ref("refs/heads/feature") == first
    assert "gitsrv: rejected refs/heads/feature: delete requires scope source:delete" in rejected.stderr

    accepted = remote.push(":refs/heads/feature", scopes="source:delete")

    assert accepted.returncode == 0, accepted.stderr
    assert remote.ref("refs/heads/feature") is None
    assert f"gitsrv: delete refs/heads/feature {first}..{ZERO_ID}" in accepted.stderr


def test_force_push_requires_source_delete(remote: Remote) -> None:
    first = remote.ref("refs/heads/main")
    second = remote.commit("second")
    remote.push_without_hooks("HEAD:refs/heads/main")
    remote.git("reset", "--quiet", "--hard", first)
    diverged = remote.commit("diverged")

    rejected = remote.push("+HEAD:refs/heads/main", scopes="source:read-update source:create")

    assert rejected.returncode != 0
    assert remote.ref("refs/heads/main") == second
    assert "gitsrv: rejected refs/heads/main: force-push requires scope source:delete" in rejected.stderr

    accepted = remote.push("+HEAD:refs/heads/main", scopes="source:delete")

    assert accepted.returncode == 0, accepted.stderr
    assert remote.ref("refs/heads/main") == diverged
    assert f"gitsrv: force-push refs/heads/main {second}..{diverged}" in accepted.stderr


def test_moved_tag_is_force_push(remote: Remote) -> None:
    first = remote.ref("refs/heads/main")
    remote.git("tag", "v1")
    remote.push_without_hooks("refs/tags/v1")
    # The new target descends from the old one, and moving the tag is still a force-push.
    second = remote.commit("second")
    remote.git("tag", "--force", "v1", second)

    rejected = remote.push("+refs/tags/v1:refs/tags/v1", scopes="source:read-update source:create")

    assert rejected.returncode != 0
    assert remote.ref("refs/tags/v1") == first
    assert "gitsrv: rejected refs/tags/v1: force-push requires scope source:delete" in rejected.stderr

    accepted = remote.push("+refs/tags/v1:refs/tags/v1", scopes="source:delete")

    assert accepted.returncode == 0, accepted.stderr
    assert remote.ref("refs/tags/v1") == second
    assert f"gitsrv: force-push refs/tags/v1 {first}..{second}" in accepted.stderr


def test_pre_receive_rejects_whole_push(remote: Remote) -> None:
    first = remote.ref("refs/heads/main")
    remote.commit("second")

    result = remote.push("HEAD:refs/heads/main", "HEAD:refs/heads/feature", scopes="source:read-update")

    assert result.returncode != 0
    assert remote.ref("refs/heads/main") == first
    assert remote.ref("refs/heads/feature") is None
    assert "gitsrv: rejected refs/heads/feature: create requires scope source:create" in result.stderr
    assert "gitsrv: rejected refs/heads/main" not in result.stderr
    assert "1 of 2 ref updates rejected, so the pre-receive hook rejects the whole push" in result.stderr


def test_update_hook_rejects_one_ref(remote: Remote, tmp_path: Path) -> None:
    update_only = tmp_path / "update-hooks"
    update_only.mkdir()
    for name in ("update", "post-receive"):
        (update_only / name).symlink_to(HOOKS_DIR / name)
    remote.use_hooks(update_only)
    first = remote.ref("refs/heads/main")
    second = remote.commit("second")

    result = remote.push("HEAD:refs/heads/main", "HEAD:refs/heads/feature", scopes="source:read-update")

    assert result.returncode != 0
    assert remote.ref("refs/heads/main") == second
    assert remote.ref("refs/heads/feature") is None
    assert "gitsrv: rejected refs/heads/feature: create requires scope source:create" in result.stderr
    assert "gitsrv: rejected refs/heads/main" not in result.stderr
    assert f"gitsrv: update refs/heads/main {first}..{second}" in result.stderr
    assert "gitsrv: create refs/heads/feature" not in result.stderr


def test_invalid_scope_name_rejects_everything(remote: Remote) -> None:
    first = remote.ref("refs/heads/main")
    remote.commit("second")

    result = remote.push("HEAD:refs/heads/main", scopes="source:read-update source:write")

    assert result.returncode != 0
    assert remote.ref("refs/heads/main") == first
    assert "gitsrv: GITSRV_TOKEN_SCOPES is invalid: invalid scope 'source:write'" in result.stderr
    assert "gitsrv: rejected refs/heads/main: invalid GITSRV_TOKEN_SCOPES on the server" in result.stderr


def test_comma_separated_scopes(remote: Remote) -> None:
    second = remote.commit("second")

    result = remote.push(
        "HEAD:refs/heads/main", "HEAD:refs/heads/feature", scopes="source:read-update,source:create"
    )

    assert result.returncode == 0, result.stderr
    assert remote.ref("refs/heads/main") == second
    assert remote.ref("refs/heads/feature") == second


def test_ref_limits_restrict_refs(remote: Remote) -> None:
    first = remote.ref("refs/heads/main")
    second = remote.commit("second")
    limits = "refs/heads/feature/* refs/tags/*"

    rejected = remote.push("HEAD:refs/heads/main", scopes=ALL_SOURCE_SCOPES, ref_limits=limits)

    assert rejected.returncode != 0
    assert remote.ref("refs/heads/main") == first
    assert (
        "gitsrv: rejected refs/heads/main: token may only change refs matching refs/heads/feature/*, refs/tags/*"
        in rejected.stderr
    )

    accepted = remote.push("HEAD:refs/heads/feature/x", scopes=ALL_SOURCE_SCOPES, ref_limits=limits)

    assert accepted.returncode == 0, accepted.stderr
    assert remote.ref("refs/heads/feature/x") == second
    assert remote.ref("refs/heads/main") == first


def test_wrapper_names_missing_package(tmp_path: Path) -> None:
    # A copy outside the checkout cannot find gitsrv next to it, and -S hides
    # site-packages in case gitsrv is installed there.
    hook = tmp_path / "pre-receive"
    shutil.copy(HOOKS_DIR / "pre-receive", hook)
    environ = base_environ(tmp_path)
    environ.pop("PYTHONPATH", None)

    result = subprocess.run(
        [sys.executable, "-S", str(hook)],
        input="",
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 1
    assert "gitsrv: the pre-receive hook cannot run: Python module 'gitsrv' not found" in result.stderr


def test_pre_receive_rejects_malformed_input() -> None:
    stderr = io.StringIO()

    status = main_pre_receive(io.BytesIO(b"two fields\n"), stderr, {"GITSRV_TOKEN_SCOPES": ALL_SOURCE_SCOPES})

    assert status == 1
    assert "gitsrv: pre-receive: invalid input line 'two fields'" in stderr.getvalue()


def test_update_rejects_wrong_argument_count() -> None:
    stderr = io.StringIO()

    status = main_update(["refs/heads/main"], stderr, {"GITSRV_TOKEN_SCOPES": ALL_SOURCE_SCOPES})

    assert status == 1
    assert "expected 3 arguments '<ref> <old> <new>', got 1" in stderr.getvalue()


def test_update_rejects_invalid_scope_name() -> None:
    stderr = io.StringIO()

    status = main_update(["refs/heads/main", ZERO_ID, "1" * 40], stderr, {"GITSRV_TOKEN_SCOPES": "source:write"})

    assert status == 1
    assert "invalid scope 'source:write'" in stderr.getvalue()
    assert "gitsrv: rejected refs/heads/main: invalid GITSRV_TOKEN_SCOPES on the server" in stderr.getvalue()


def test_update_rejects_sha256_object_id() -> None:
    stderr = io.StringIO()

    status = main_update(["refs/heads/main", "0" * 64, "1" * 64], stderr, {"GITSRV_TOKEN_SCOPES": ALL_SOURCE_SCOPES})

    assert status == 1
    assert "SHA-256 repositories are not supported" in stderr.getvalue()
