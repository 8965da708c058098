"""OAuth2 client-credentials grant against a real server: `gitsrv app`,
POST /oauth/token, and the issued access tokens used with the git CLI."""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import json
import re
import urllib.parse
from dataclasses import dataclass

import pytest
from sqlalchemy import update

from gitsrv.db.engine import Database
from gitsrv.db.models import Token
from tests.conftest import copy_sample

TOKEN_PATTERN = re.compile(r"gsv_[0-9A-Za-z]{49}")
CI_SCOPES = ("source:read", "source:read-update")


@dataclass(frozen=True)
class App:
    """An application created with `gitsrv app create`."""

    id: int
    client_id: str
    client_secret: str

    def basic_auth(self, secret: str | None = None) -> dict[str, str]:
        credentials = f"{self.client_id}:{secret or self.client_secret}"
        return {"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}


def create_app(server, name: str, *scopes: str) -> App:
    options = [option for scope in scopes for option in ("--scope", scope)]
    result = server.cli("app", "create", "--name", name, *options)
    match = re.search(r"created application (\d+) ", result.stderr)
    assert match, result.stderr
    client_id, client_secret = result.stdout.splitlines()
    return App(int(match[1]), client_id, client_secret)


def post_token(server, form: dict[str, str], headers: dict[str, str] | None = None):
    """POST a form to /oauth/token and return (status, headers, parsed JSON body)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request(
            "POST",
            "/oauth/token",
            body=urllib.parse.urlencode(form),
            headers={"Content-Type": "application/x-www-form-urlencoded", **(headers or {})},
        )
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), json.loads(response.read())
    finally:
        connection.close()


def access_token(server, app: App, scope: str | None = None) -> str:
    form = {"grant_type": "client_credentials"}
    if scope is not None:
        form["scope"] = scope
    status, _headers, body = post_token(server, form, app.basic_auth())
    assert status == 200, body
    return body["access_token"]


def api_token(server, token: str) -> tuple[int, dict | None]:
    """Fetch /api/v1/token with a Bearer token and return the status, and the JSON body on 200."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request("GET", "/api/v1/token", headers={"Authorization": f"Bearer {token}"})
        response = connection.getresponse()
        body = response.read()
        return response.status, json.loads(body) if response.status == 200 else None
    finally:
        connection.close()


def assert_oauth_error(status: int, headers: dict[str, str], body: dict, expected_status: int, error: str) -> None:
    """Assert that a response is an RFC 6749 section 5.2 error with this status and error code."""
    assert status == expected_status, body
    assert headers["Content-Type"] == "application/json"
    assert headers["Cache-Control"] == "no-store"
    assert body["error"] == error
    assert set(body) <= {"error", "error_description", "error_uri"}
    if "error_description" in body:
        assert isinstance(body["error_description"], str)


@pytest.fixture(scope="module")
def ci_app(server) -> App:
    return create_app(server, "ci", *CI_SCOPES)


def test_app_create_prints_id_and_secret(server):
    result = server.cli("app", "create", "--name", "printed", "--scope", "source:read", "--scope", "source:read-update")

    lines = result.stdout.splitlines()
    assert len(lines) == 2, result.stdout
    assert re.fullmatch(r"gsvapp_[0-9A-Za-z]{20}", lines[0])
    assert re.fullmatch(r"gsc_[0-9A-Za-z]{49}", lines[1])
    assert "created application" in result.stderr
    assert lines[1] not in result.stderr


def test_app_list_shows_app(server, ci_app):
    output = server.cli("app", "list").stdout

    line = next(line for line in output.splitlines() if ci_app.client_id in line)
    assert line.split()[:2] == [str(ci_app.id), "ci"]
    assert "source:read,source:read-update" in line
    assert line.endswith("active")


@pytest.mark.parametrize("client_auth", ["basic", "form"])
def test_grant_issues_access_token(server, ci_app, client_auth):
    form = {"grant_type": "client_credentials"}
    headers = {}
    if client_auth == "basic":
        headers = ci_app.basic_auth()
    else:
        form.update(client_id=ci_app.client_id, client_secret=ci_app.client_secret)

    status, response_headers, body = post_token(server, form, headers)

    assert status == 200, body
    assert response_headers["Content-Type"] == "application/json"
    assert response_headers["Cache-Control"] == "no-store"
    assert TOKEN_PATTERN.fullmatch(body["access_token"])
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["scope"] == "source:read source:read-update"


def test_grant_scope_subset(server, ci_app):
    status, _headers, body = post_token(
        server, {"grant_type": "client_credentials", "scope": "source:read"}, ci_app.basic_auth()
    )

    assert status == 200, body
    assert body["scope"] == "source:read"
    assert api_token(server, body["access_token"])[1]["scopes"] == ["source:read"]


@pytest.mark.parametrize("scope", ["source:delete", "source:read source:create", "no-such:scope"])
def test_grant_scope_not_granted(server, ci_app, scope):
    status, headers, body = post_token(server, {"grant_type": "client_credentials", "scope": scope}, ci_app.basic_auth())

    assert_oauth_error(status, headers, body, 400, "invalid_scope")


@pytest.mark.parametrize("client_auth", ["basic", "form"])
def test_grant_wrong_secret(server, ci_app, client_auth):
    wrong = ci_app.client_secret[:-1] + ("A" if ci_app.client_secret[-1] != "A" else "B")
    form = {"grant_type": "client_credentials"}
    headers = {}
    if client_auth == "basic":
        headers = ci_app.basic_auth(wrong)
    else:
        form.update(client_id=ci_app.client_id, client_secret=wrong)

    status, response_headers, body = post_token(server, form, headers)

    assert_oauth_error(status, response_headers, body, 401, "invalid_client")


def test_grant_without_client_auth(server):
    status, headers, body = post_token(server, {"grant_type": "client_credentials"})

    assert_oauth_error(status, headers, body, 401, "invalid_client")


def test_grant_unknown_grant_type(server, ci_app):
    status, headers, body = post_token(server, {"grant_type": "password"}, ci_app.basic_auth())

    assert_oauth_error(status, headers, body, 400, "unsupported_grant_type")


def test_grant_missing_grant_type(server, ci_app):
    status, headers, body = post_token(server, {}, ci_app.basic_auth())

    # RFC 6749 section 5.2 names invalid_request for a missing parameter.
    assert_oauth_error(status, headers, body, 400, "invalid_request")


def test_token_endpoint_get_is_405(server):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request("GET", "/oauth/token")
        response = connection.getresponse()
        response.read()
    finally:
        connection.close()

    assert response.status == 405
    assert response.getheader("Allow") == "POST"


# Access tokens with the git CLI


@pytest.fixture
def repo(server, sample, request):
    """A fresh copy of the sample repository, named after the test."""
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")
    copy_sample(server, name)
    return name


def server_ref(git, server, repo: str, ref: str) -> str | None:
    result = git.run("--git-dir", str(server.repos_dir / f"{repo}.git"), "rev-parse", "--verify", "-q", ref, check=False)
    return result.stdout.strip() or None


def commit(git, work, message: str) -> str:
    path = work / "change.txt"
    path.write_text(message + "\n")
    git.run("add", "change.txt", cwd=work)
    git.run("commit", "-q", "-m", message, cwd=work)
    return git.out("rev-parse", "HEAD", cwd=work)


def test_clone_with_access_token(git, server, sample, ci_app, tmp_path):
    token = access_token(server, ci_app)

    git.run("clone", "-q", server.url("sample", token), str(tmp_path / "c"))

    assert git.out("rev-parse", "HEAD", cwd=tmp_path / "c") == sample["main"]


def test_access_token_push_fast_forward(git, server, repo, ci_app, tmp_path):
    work = tmp_path / "w"
    git.run("clone", "-q", server.url(repo, access_token(server, ci_app)), str(work))
    new = commit(git, work, "fast-forward with an access token")

    result = git.run("push", "origin", "main", cwd=work, check=False)

    assert result.returncode == 0, result.stderr
    assert server_ref(git, server, repo, "refs/heads/main") == new


def test_read_only_access_token_push_403(git, server, repo, sample, ci_app, tmp_path):
    work = tmp_path / "w"
    git.run("clone", "-q", server.url(repo, access_token(server, ci_app, scope="source:read")), str(work))
    commit(git, work, "never pushed")

    result = git.run("push", "origin", "main", cwd=work, check=False)

    assert result.returncode != 0
    assert "403" in result.stderr
    assert "remote: Pushing requires scope source:create or source:delete or source:read-update" in result.stderr
    assert server_ref(git, server, repo, "refs/heads/main") == sample["main"]


def test_scope_subset_rejects_per_ref(git, server, repo, sample, tmp_path):
    app = create_app(server, "creator", "source:read", "source:read-update", "source:create")
    token = access_token(server, app, scope="source:read source:create")
    work = tmp_path / "w"
    git.run("clone", "-q", server.url(repo, token), str(work))
    new = commit(git, work, "a fast-forward and a new branch")

    result = git.run("push", "origin", "main", "HEAD:refs/heads/topic", cwd=work, check=False)

    assert result.returncode != 0
    assert "! [remote rejected] main -> main (update requires scope source:read-update)" in result.stderr
    assert server_ref(git, server, repo, "refs/heads/main") == sample["main"]
    assert server_ref(git, server, repo, "refs/heads/topic") == new


def test_api_shows_app_and_expiry(server, ci_app):
    before = dt.datetime.now(dt.timezone.utc)
    token = access_token(server, ci_app)

    status, info = api_token(server, token)

    assert status == 200
    assert info["app_id"] == ci_app.id
    assert info["name"] == "oauth:ci"
    assert info["scopes"] == list(CI_SCOPES)
    expires_at = dt.datetime.fromisoformat(info["expires_at"])
    assert abs((expires_at - (before + dt.timedelta(seconds=3600))).total_seconds()) < 60


def test_token_list_all_shows_access_tokens(server, ci_app):
    token_id = api_token(server, access_token(server, ci_app))[1]["id"]

    listed = [record["id"] for record in json.loads(server.cli("token", "list", "--json").stdout)]
    listed_all = json.loads(server.cli("token", "list", "--json", "--all").stdout)

    assert token_id not in listed
    record = next(record for record in listed_all if record["id"] == token_id)
    assert record["app_id"] == ci_app.id


def test_app_revoke_stops_credentials(server, sample):
    app = create_app(server, "doomed", "source:read")
    token = access_token(server, app)
    assert api_token(server, token)[0] == 200

    server.cli("app", "revoke", str(app.id))

    status, headers, body = post_token(server, {"grant_type": "client_credentials"}, app.basic_auth())
    assert_oauth_error(status, headers, body, 401, "invalid_client")
    assert api_token(server, token)[0] == 401
    app_line = next(line for line in server.cli("app", "list").stdout.splitlines() if app.client_id in line)
    assert app_line.endswith("revoked")


def test_app_revoke_unknown_id_fails(server):
    result = server.cli("app", "revoke", "999999", check=False)

    assert result.returncode == 1
    assert "no application with id 999999" in result.stderr


def test_expired_access_token_is_401(server, ci_app):
    token = access_token(server, ci_app)
    status, info = api_token(server, token)
    assert status == 200

    database = Database(server.settings())
    try:
        with database.session() as session:
            session.execute(
                update(Token)
                .where(Token.id == info["id"])
                .values(expires_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1))
            )
            session.commit()
    finally:
        database.dispose()

    assert api_token(server, token)[0] == 401


def test_failed_client_authentication_is_logged(server, ci_app):
    before = server.log().count("client authentication failed")

    status, _headers, body = post_token(server, {"grant_type": "client_credentials"},
                                        ci_app.basic_auth("gsc_wrong"))

    assert status == 401
    assert body["error_description"] == "client authentication failed: unknown or revoked client id, or wrong client secret"
    assert server.log().count("client authentication failed") == before + 1
    assert "gsc_wrong" not in server.log()
