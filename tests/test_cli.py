"""The gitsrv command line: settings, output streams and error messages."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def gitsrv(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {key: value for key, value in os.environ.items() if not key.startswith(("GIT_", "GITSRV_"))}
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "gitsrv", *args], env=environ, capture_output=True, text=True,
                          timeout=60)


def test_data_option_before_or_after_subcommand(tmp_path):
    first = tmp_path / "first"
    second = tmp_path / "second"

    assert gitsrv("--data", str(first), "repo", "create", "a/one").returncode == 0
    assert gitsrv("repo", "create", "b/two", "--data", str(second)).returncode == 0
    # The subcommand's own --data wins over the one before it.
    listed = gitsrv("--data", str(first), "repo", "list", "--data", str(second))

    assert (first / "repos" / "a" / "one.git" / "HEAD").is_file()
    assert (second / "repos" / "b" / "two.git" / "HEAD").is_file()
    assert listed.stdout.split() == ["b/two"]


def test_data_environment_variable(tmp_path):
    result = gitsrv("repo", "create", "c/three", env={"GITSRV_DATA": str(tmp_path / "env")})

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "env" / "repos" / "c" / "three.git" / "HEAD").is_file()


def test_token_create_prints_only_token_on_stdout(tmp_path):
    result = gitsrv("token", "create", "--name", "ci", "--scope", "source:read", "--data", str(tmp_path))

    assert result.returncode == 0
    assert len(result.stdout.splitlines()) == 1
    assert result.stdout.startswith("gsv_")
    assert "created token 1 (ci)" in result.stderr


def test_unknown_scope_lists_valid_ones(tmp_path):
    result = gitsrv("token", "create", "--name", "x", "--scope", "source:write", "--data", str(tmp_path))

    assert result.returncode == 2
    assert "invalid scope 'source:write'" in result.stderr
    assert "source:read-update" in result.stderr


@pytest.mark.parametrize(
    "variable,value,message",
    [
        ("GITSRV_PACK_CACHE", "maybe", "invalid GITSRV_PACK_CACHE='maybe': expected on or off"),
        ("GITSRV_PACK_CACHE_MAX_MB", "-5", "invalid GITSRV_PACK_CACHE_MAX_MB='-5': must be at least 0"),
        ("GITSRV_WEBHOOK_TIMEOUT", "abc", "invalid GITSRV_WEBHOOK_TIMEOUT='abc': expected a number"),
    ],
)
def test_invalid_setting_is_rejected(tmp_path, variable, value, message):
    result = gitsrv("repo", "list", "--data", str(tmp_path), env={variable: value})

    assert result.returncode == 1
    assert message in result.stderr


def test_audit_since_explains_formats(tmp_path):
    result = gitsrv("audit", "--since", "yesterday", "--data", str(tmp_path))

    assert result.returncode == 2
    assert "expected a duration such as 24h or 7d, or an ISO 8601 date" in result.stderr


def test_explain_mentions_missing_repository(tmp_path):
    gitsrv("token", "create", "--name", "x", "--scope", "source:read", "--data", str(tmp_path))

    result = gitsrv("token", "explain", "1", "no/such/repo", "--data", str(tmp_path))

    assert result.returncode == 0
    assert "repository no/such/repo does not exist on this server" in result.stdout
    assert "read        allowed" in result.stdout


def test_repo_create_rejects_escapes(tmp_path):
    result = gitsrv("repo", "create", "../outside", "--data", str(tmp_path))

    assert result.returncode == 1
    assert "invalid repository path '../outside'" in result.stderr
    assert not (tmp_path / "outside.git").exists()
