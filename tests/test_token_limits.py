"""Token lifetime and limits against a real server: format, presentation forms,
expiry, repo and ref limits, revocation, last use, /api/v1/token, explain,
audit and the 429 after repeated failed authentications."""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import json
import re

import pytest
from sqlalchemy import func, select, update

from gitsrv.access.scopes import parse_scopes
from gitsrv.auth.store import create_token
from gitsrv.auth.tokens import generate_token
from gitsrv.db.engine import Database
from gitsrv.db.models import Token
from tests.conftest import Server, copy_sample, free_port

TOKEN_PATTERN = re.compile(r"gsv_[0-9A-Za-z]{49}")
# NOTE: the tests on the shared `server` present 6 invalid tokens in all, below
# the default limit of 10 failures per address in 300 s. Past that limit the
# server returns 429 instead of 401, so add new failures on `limited_server`.
INFO_REFS = "/sample.git/info/refs?service=git-upload-pack"
REF_LIMIT = "refs/heads/ci/*"
REF_LIMIT_REJECTION = f"token may only change refs matching {REF_LIMIT}"
PUSHER_SCOPES = ("source:read", "source:read-update", "source:create")


def http_request(server, path: str, headers: dict[str, str] | None = None):
    """Send one GET request and return (status, headers, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def basic(value: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(value.encode()).decode()}


def token_info(server, token: str, query: str = "", headers: dict[str, str] | None = None) -> dict:
    """Fetch /api/v1/token with the token as basic-auth password and return the JSON body."""
    status, _headers, body = http_request(server, "/api/v1/token" + query, headers or basic(f"git:{token}"))
    assert status == 200, body
    return json.loads(body)


def cli_token(server, *options: str, name: str = "cli") -> tuple[int, str]:
    """Create a token with `gitsrv token create` and return its id and secret."""
    result = server.cli("token", "create", "--name", name, *options)
    match = re.search(r"created token (\d+) ", result.stderr)
    assert match, result.stderr
    return int(match[1]), result.stdout.strip()


def stored_token(
    server,
    *scopes: str,
    name: str = "stored",
    expires_at: dt.datetime | None = None,
    repo_limits: tuple[str, ...] = (),
    ref_limits: tuple[str, ...] = (),
) -> tuple[int, str]:
    """Create a token in the server's database and return its id and secret.

    Faster than `gitsrv token create`, for tests that are not about the CLI.
    """
    database = Database(server.settings())
    try:
        with database.session() as session:
            row, secret = create_token(
                session, name, parse_scopes(scopes),
                expires_at=expires_at, repo_limits=repo_limits, ref_limits=ref_limits,
            )
            session.commit()
            return row.id, secret
    finally:
        database.dispose()


def count_tokens(server) -> int:
    database = Database(server.settings())
    try:
        with database.session() as session:
            return session.scalar(select(func.count()).select_from(Token))
    finally:
        database.dispose()


def scope_options(*scopes: str) -> list[str]:
    return [option for scope in scopes for option in ("--scope", scope)]


def listed_tokens(server) -> dict[int, dict]:
    """Run `gitsrv token list --json` and return its records by token id."""
    records = json.loads(server.cli("token", "list", "--json").stdout)
    return {record["id"]: record for record in records}


def set_expiry(server, token_id: int, moment: dt.datetime) -> None:
    database = Database(server.settings())
    try:
        with database.session() as session:
            session.execute(update(Token).where(Token.id == token_id).values(expires_at=moment))
            session.commit()
    finally:
        database.dispose()


def server_ref(git, server, repo: str, ref: str) -> str | None:
    result = git.run("--git-dir", str(server.repos_dir / f"{repo}.git"), "rev-parse", "--verify", "-q", ref, check=False)
    return result.stdout.strip() or None


def commit(git, work, message: str) -> str:
    path = work / "change.txt"
    path.write_text((path.read_text() if path.exists() else "") + message + "\n")
    git.run("add", "change.txt", cwd=work)
    git.run("commit", "-q", "-m", message, cwd=work)
    return git.out("rev-parse", "HEAD", cwd=work)


@pytest.fixture
def repo(server, sample, request):
    """A fresh copy of the sample repository, named after the test."""
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")
    copy_sample(server, name)
    return name


@pytest.fixture(scope="module")
def team_repo(server, git, tmp_path_factory):
    """Create the repository `team/x` with one commit on main and return that commit's id."""
    server.cli("repo", "create", "team/x")
    work = tmp_path_factory.mktemp("team-x")
    git.run("init", "-q", str(work))
    (work / "README").write_text("team repository\n")
    git.run("add", "README", cwd=work)
    git.run("commit", "-q", "-m", "first commit", cwd=work)
    pusher = server.token("source:read", "source:create", name="team-pusher")
    git.run("push", "-q", server.url("team/x", pusher), "HEAD:refs/heads/main", cwd=work)
    return git.out("rev-parse", "HEAD", cwd=work)


# Token format


def test_create_prints_only_token(server):
    result = server.cli("token", "create", "--name", "format", "--scope", "source:read")

    assert TOKEN_PATTERN.fullmatch(result.stdout.rstrip("\n")), repr(result.stdout)
    assert result.stdout.count("\n") == 1
    assert "created token" in result.stderr
    assert "shown only once" in result.stderr
    assert result.stdout.strip() not in result.stderr


@pytest.mark.parametrize("position", [10, -1], ids=["body", "checksum"])
def test_changed_character_is_401(server, sample, position):
    _token_id, token = stored_token(server, "source:read")
    assert http_request(server, INFO_REFS, basic(f"git:{token}"))[0] == 200
    index = position % len(token)
    changed = token[:index] + ("A" if token[index] != "A" else "B") + token[index + 1 :]

    status, headers, _body = http_request(server, INFO_REFS, basic(f"git:{changed}"))

    assert status == 401
    assert headers["WWW-Authenticate"] == 'Basic realm="gitsrv"'


# Presentation forms with the real git CLI


def presentation(server, token: str, form: str) -> tuple[list[str], str]:
    """Return the git -c options and the URL that present `token` in `form`."""
    if form == "fio-oauth2-password":
        return [], server.url("sample", token, user="fio-oauth2")
    if form == "token-as-user-name":
        return [], f"http://{token}@127.0.0.1:{server.port}/sample"
    header = {
        "extraheader-basic": "Authorization: basic " + base64.b64encode(token.encode()).decode(),
        "extraheader-bearer": f"Authorization: Bearer {token}",
        "extraheader-osf-token": f"OSF-TOKEN: {token}",
    }[form]
    return ["-c", f"http.extraheader={header}"], server.url("sample")


@pytest.mark.parametrize(
    "form",
    ["fio-oauth2-password", "token-as-user-name", "extraheader-basic", "extraheader-bearer", "extraheader-osf-token"],
)
def test_clone_presentation_forms(git, server, sample, tmp_path, form):
    token = server.token("source:read", name=f"form-{form}")
    options, url = presentation(server, token, form)

    git.run(*options, "clone", "-q", url, str(tmp_path / "c"))

    assert git.out("rev-parse", "HEAD", cwd=tmp_path / "c") == sample["main"]


# Expiry


def test_expires_in_shown_in_list(server):
    before = dt.datetime.now(dt.timezone.utc)
    token_id, _token = cli_token(server, "--scope", "source:read", "--expires-in", "1h")

    record = listed_tokens(server)[token_id]

    expires_at = dt.datetime.fromisoformat(record["expires_at"])
    expected = before + dt.timedelta(hours=1)
    assert abs((expires_at - expected).total_seconds()) < 60


def test_expired_token_is_401_like_unknown(server, sample):
    in_one_hour = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    token_id, token = stored_token(server, "source:read", expires_at=in_one_hour)
    assert http_request(server, INFO_REFS, basic(f"git:{token}"))[0] == 200

    set_expiry(server, token_id, dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1))

    expired = http_request(server, INFO_REFS, basic(f"git:{token}"))
    unknown = http_request(server, INFO_REFS, basic(f"git:{generate_token()}"))
    assert expired[0] == 401
    assert expired[0] == unknown[0]
    assert expired[1]["WWW-Authenticate"] == unknown[1]["WWW-Authenticate"]
    assert expired[2] == unknown[2]


def test_expires_at_in_past_rejected(server):
    tokens_before = count_tokens(server)

    result = server.cli("token", "create", "--name", "past", "--scope", "source:read",
                        "--expires-at", "2020-01-01", check=False)

    assert result.returncode == 2
    assert result.stdout == ""
    assert "Invalid value for --expires-at: expiry 2020-01-01T00:00:00+00:00 is in the past" in result.stderr
    assert count_tokens(server) == tokens_before


@pytest.mark.parametrize("duration", ["0h", "1.5h", "abc", "10", "3y"])
def test_invalid_duration_rejected(server, duration):
    result = server.cli("token", "create", "--name", "bad", "--scope", "source:read",
                        "--expires-in", duration, check=False)

    assert result.returncode == 2
    assert result.stdout == ""
    assert f"Invalid value for --expires-in: invalid duration '{duration}'" in result.stderr
    assert "expected a positive number and a unit s, m, h, d or w" in result.stderr


def test_invalid_expiry_date_rejected(server):
    result = server.cli("token", "create", "--name", "bad", "--scope", "source:read",
                        "--expires-at", "next tuesday", check=False)

    assert result.returncode == 2
    assert result.stdout == ""
    assert "Invalid value for --expires-at: invalid date 'next tuesday': expected ISO 8601" in result.stderr


def test_expires_in_and_at_conflict(server):
    result = server.cli("token", "create", "--name", "bad", "--scope", "source:read",
                        "--expires-in", "1h", "--expires-at", "2999-01-01", check=False)

    assert result.returncode == 2
    assert "--expires-in and --expires-at cannot be combined" in result.stderr


# Repository limits


def test_repo_limit_allows_matching_repo(git, server, team_repo, tmp_path):
    _token_id, token = cli_token(server, "--scope", "source:read", "--repo", "team/*")

    git.run("clone", "-q", server.url("team/x", token), str(tmp_path / "c"))

    assert git.out("rev-parse", "HEAD", cwd=tmp_path / "c") == team_repo


def test_repo_limit_hides_other_repo(git, server, sample, team_repo, tmp_path):
    _token_id, token = stored_token(server, "source:read", repo_limits=("team/*",))

    result = git.run("clone", server.url("sample", token), str(tmp_path / "c"), check=False)

    assert result.returncode != 0
    assert "not found" in result.stderr
    assert http_request(server, INFO_REFS, basic(f"git:{token}"))[0] == 404


def test_repo_limit_in_api(server, sample, team_repo):
    _token_id, token = stored_token(server, "source:read", repo_limits=("team/*",))

    info = token_info(server, token, "?repo=sample")

    assert info["repo_limits"] == ["team/*"]
    assert info["permissions"]["read"]["allowed"] is False
    assert info["permissions"]["read"]["reason"] == "repository sample is outside the token's repo limits team/*"
    assert token_info(server, token, "?repo=team/x")["permissions"]["read"] == {"allowed": True, "reason": None}


# Ref limits


@pytest.fixture
def ref_limited_clone(git, server, repo, tmp_path):
    """A clone of `repo` whose origin URL carries a token limited to refs/heads/ci/*."""
    token_id, token = cli_token(server, *scope_options(*PUSHER_SCOPES), "--ref", REF_LIMIT, name="ci-pusher")
    work = tmp_path / "w"
    git.run("clone", "-q", server.url(repo, token), str(work))
    return work, token_id


def test_ref_limit_allows_matching_ref(git, server, repo, ref_limited_clone):
    work, _token_id = ref_limited_clone
    new = commit(git, work, "build 1")

    result = git.run("push", "origin", "HEAD:refs/heads/ci/build-1", cwd=work, check=False)

    assert result.returncode == 0, result.stderr
    assert server_ref(git, server, repo, "refs/heads/ci/build-1") == new


def test_ref_limit_rejects_other_ref(git, server, repo, sample, ref_limited_clone):
    work, _token_id = ref_limited_clone
    commit(git, work, "fast-forward of main")

    result = git.run("push", "origin", "main", cwd=work, check=False)

    assert result.returncode != 0
    assert f"! [remote rejected] main -> main ({REF_LIMIT_REJECTION})" in result.stderr
    assert server_ref(git, server, repo, "refs/heads/main") == sample["main"]


def test_ref_limit_in_mixed_push(git, server, repo, sample, ref_limited_clone):
    work, _token_id = ref_limited_clone
    new = commit(git, work, "pushed to main and to a ci branch")

    result = git.run("push", "origin", "main", "HEAD:refs/heads/ci/build-2", cwd=work, check=False)

    assert result.returncode != 0
    assert f"! [remote rejected] main -> main ({REF_LIMIT_REJECTION})" in result.stderr
    assert server_ref(git, server, repo, "refs/heads/ci/build-2") == new
    assert server_ref(git, server, repo, "refs/heads/main") == sample["main"]


def test_ref_limit_must_start_with_refs(server):
    result = server.cli("token", "create", "--name", "bad", "--scope", "source:create",
                        "--ref", "heads/ci/*", check=False)

    assert result.returncode == 2
    assert result.stdout == ""
    assert "invalid ref pattern 'heads/ci/*': must start with refs/" in result.stderr


# Revocation and last use


def test_revoked_token_is_401(git, server, sample):
    token_id, token = stored_token(server, "source:read", name="revoke-me")
    git.run("ls-remote", server.url("sample", token))

    server.cli("token", "revoke", str(token_id))

    result = git.run("ls-remote", server.url("sample", token), check=False)
    assert result.returncode != 0
    assert http_request(server, INFO_REFS, basic(f"git:{token}"))[0] == 401
    assert listed_tokens(server)[token_id]["revoked_at"] is not None


def test_revoke_unknown_id_fails(server):
    result = server.cli("token", "revoke", "999999", check=False)

    assert result.returncode == 1
    assert "no token with id 999999" in result.stderr


def test_last_used_set_after_request(git, server, sample):
    used_id, used = stored_token(server, "source:read", name="used")
    unused_id, _unused = stored_token(server, "source:read", name="unused")
    assert listed_tokens(server)[used_id]["last_used_at"] is None

    git.run("ls-remote", server.url("sample", used))

    records = listed_tokens(server)
    last_used = records[used_id]["last_used_at"]
    assert last_used is not None
    age = dt.datetime.now(dt.timezone.utc) - dt.datetime.fromisoformat(last_used)
    assert dt.timedelta(0) <= age < dt.timedelta(minutes=1)
    assert records[unused_id]["last_used_at"] is None


# GET /api/v1/token and `gitsrv token explain`


def test_api_without_token_is_401(server):
    status, headers, _body = http_request(server, "/api/v1/token")

    assert status == 401
    assert headers["WWW-Authenticate"] == 'Basic realm="gitsrv"'


def test_api_describes_token(server):
    before = dt.datetime.now(dt.timezone.utc)
    token_id, token = cli_token(
        server, *scope_options("source:read", "source:read-update"), "--expires-in", "2h",
        "--repo", "team/*", "--ref", REF_LIMIT, name="described",
    )

    info = token_info(server, token)

    assert info["id"] == token_id
    assert info["name"] == "described"
    assert info["scopes"] == ["source:read", "source:read-update"]
    assert info["repo_limits"] == ["team/*"]
    assert info["ref_limits"] == [REF_LIMIT]
    expires_at = dt.datetime.fromisoformat(info["expires_at"])
    assert abs((expires_at - (before + dt.timedelta(hours=2))).total_seconds()) < 60
    assert info["app_id"] is None
    assert "permissions" not in info


@pytest.mark.parametrize("form", ["bearer", "osf-token"])
def test_api_other_presentation_forms(server, form):
    token_id, token = stored_token(server, "source:read")
    headers = {"bearer": {"Authorization": f"Bearer {token}"}, "osf-token": {"OSF-TOKEN": token}}[form]

    assert token_info(server, token, headers=headers)["id"] == token_id


def test_api_ref_without_repo_is_400(server):
    _token_id, token = stored_token(server, "source:read")

    status, _headers, body = http_request(server, "/api/v1/token?ref=refs/heads/main", basic(f"git:{token}"))

    assert status == 400
    assert json.loads(body) == {"error": "the ref parameter needs a repo parameter"}


# Each case: the token's scopes, its ref limits, and per operation the
# expected (allowed, reason) on repository sample and ref refs/heads/main.
PERMISSION_CASES = {
    "read-update": (
        ("source:read", "source:read-update"),
        (),
        {
            "read": (True, None),
            "update": (True, None),
            "create": (False, "create requires scope source:create"),
            "delete": (False, "delete requires scope source:delete"),
            "force-push": (False, "force-push requires scope source:delete"),
        },
    ),
    "create-delete": (
        ("source:create", "source:delete"),
        (),
        {
            "read": (False, "read requires scope source:read"),
            "update": (False, "update requires scope source:read-update"),
            "create": (True, None),
            "delete": (True, None),
            "force-push": (True, None),
        },
    ),
    "ref-limited": (
        ("source:read", "source:read-update", "source:create", "source:delete"),
        (REF_LIMIT,),
        {
            "read": (True, None),
            "update": (False, REF_LIMIT_REJECTION),
            "create": (False, REF_LIMIT_REJECTION),
            "delete": (False, REF_LIMIT_REJECTION),
            "force-push": (False, REF_LIMIT_REJECTION),
        },
    ),
}


@pytest.mark.parametrize("case", list(PERMISSION_CASES))
def test_api_permissions_match_scopes(server, sample, case):
    scopes, ref_limits, expected = PERMISSION_CASES[case]
    _token_id, token = stored_token(server, *scopes, ref_limits=ref_limits)

    info = token_info(server, token, "?repo=sample&ref=refs/heads/main")

    assert info["repo"] == "sample"
    assert info["ref"] == "refs/heads/main"
    assert set(info["permissions"]) == {"read", "update", "create", "delete", "force-push"}
    for operation, (allowed, reason) in expected.items():
        assert info["permissions"][operation] == {"allowed": allowed, "reason": reason}, operation


@pytest.mark.parametrize("case", list(PERMISSION_CASES))
def test_explain_matches_api(server, sample, case):
    scopes, ref_limits, expected = PERMISSION_CASES[case]
    token_id, _token = stored_token(server, *scopes, name=f"explain-{case}", ref_limits=ref_limits)

    output = server.cli("token", "explain", str(token_id), "sample", "refs/heads/main").stdout

    lines = output.splitlines()
    assert lines[0].startswith(f"token {token_id} (explain-{case}): ")
    assert "repository sample, ref refs/heads/main" in lines
    for operation, (allowed, reason) in expected.items():
        line = f"  {operation:<11} {'allowed' if allowed else 'denied'}" + (f": {reason}" if reason else "")
        assert line in lines, output


def test_explain_ref_limit_matching_ref(server, sample):
    scopes, ref_limits, _expected = PERMISSION_CASES["ref-limited"]
    token_id, _token = stored_token(server, *scopes, ref_limits=ref_limits)

    lines = server.cli("token", "explain", str(token_id), "sample", "refs/heads/ci/build-1").stdout.splitlines()

    for operation in ("read", "update", "create", "delete", "force-push"):
        assert f"  {operation:<11} allowed" in lines


def test_explain_expired_token_denies_all(server, sample):
    token_id, _token = stored_token(server, "source:read")
    set_expiry(server, token_id, dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1))

    lines = server.cli("token", "explain", str(token_id), "sample").stdout.splitlines()

    assert "this token is revoked or expired: every request with it is answered 401" in lines
    assert "  read        denied: token is revoked or expired" in lines


# Audit


@pytest.fixture
def audited_push(git, server, repo, sample, ref_limited_clone):
    """A push to `repo` with one accepted ref (a ci branch) and one rejected (main)."""
    work, token_id = ref_limited_clone
    new = commit(git, work, "audited push")
    result = git.run("push", "origin", "main", "HEAD:refs/heads/ci/audit", cwd=work, check=False)
    assert f"! [remote rejected] main -> main ({REF_LIMIT_REJECTION})" in result.stderr
    return {"repo": repo, "token_id": token_id, "new": new, "old_main": sample["main"]}


def audit_records(server, *options: str) -> list[dict]:
    return json.loads(server.cli("audit", "--json", *options).stdout)


def test_audit_lists_push_with_verdicts(server, audited_push):
    records = audit_records(server, "--repo", audited_push["repo"])

    assert len(records) == 1
    record = records[0]
    assert record["repository"] == audited_push["repo"]
    assert record["token_id"] == audited_push["token_id"]
    assert record["remote_addr"] == "127.0.0.1"
    assert record["atomic"] is False
    updates = {ref_update["ref"]: ref_update for ref_update in record["ref_updates"]}
    assert set(updates) == {"refs/heads/ci/audit", "refs/heads/main"}
    assert updates["refs/heads/ci/audit"] == {
        "ref": "refs/heads/ci/audit", "old": "0" * 40, "new": audited_push["new"],
        "classification": "create", "status": "ok", "reason": None,
    }
    assert updates["refs/heads/main"] == {
        "ref": "refs/heads/main", "old": audited_push["old_main"], "new": audited_push["new"],
        "classification": "update", "status": "rejected", "reason": REF_LIMIT_REJECTION,
    }


def test_audit_filters(server, audited_push):
    repo = audited_push["repo"]
    token_id = audited_push["token_id"]
    other_id, _other = stored_token(server, "source:read")

    assert [r["repository"] for r in audit_records(server, "--token", str(token_id))] == [repo]
    assert audit_records(server, "--token", str(other_id)) == []
    assert len(audit_records(server, "--repo", repo, "--since", "1h")) == 1
    assert audit_records(server, "--repo", repo, "--since", "2999-01-01") == []


def test_audit_since_invalid_rejected(server):
    result = server.cli("audit", "--since", "last week", check=False)

    assert result.returncode == 2
    assert "Invalid value for --since: invalid value 'last week': expected a duration such as 24h or 7d" in result.stderr


def test_audit_text_line_per_ref(server, audited_push):
    output = server.cli("audit", "--repo", audited_push["repo"]).stdout

    lines = output.splitlines()
    assert len(lines) == 3, output
    assert f"repo {audited_push['repo']}  token {audited_push['token_id']}  from 127.0.0.1" in lines[0]
    ref_lines = {line.split()[2]: line for line in lines[1:]}
    assert set(ref_lines) == {"refs/heads/ci/audit", "refs/heads/main"}
    assert ref_lines["refs/heads/ci/audit"].split()[:2] == ["ok", "create"]
    assert ref_lines["refs/heads/main"].split()[:2] == ["rejected", "update"]
    assert ref_lines["refs/heads/main"].endswith(f"({REF_LIMIT_REJECTION})")


# Rate limit on failed authentications


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory):
    """A one-worker server that blocks an address after 3 failed authentications."""
    data_dir = tmp_path_factory.mktemp("gitsrv-limited") / "data"
    instance = Server(
        data_dir=data_dir,
        port=free_port(),
        env={"GITSRV_AUTH_FAILURE_LIMIT": "3"},
        serve_args=["--workers", "1"],
    )
    instance.cli("repo", "list")  # creates and migrates the database
    instance.start()
    yield instance
    instance.stop()


def test_repeated_failures_get_429(git, limited_server):
    valid = limited_server.token("source:read", name="valid")
    assert http_request(limited_server, "/api/v1/token", basic(f"git:{valid}"))[0] == 200
    invalid = basic(f"git:{generate_token()}")

    statuses = [http_request(limited_server, INFO_REFS, invalid)[0] for _ in range(3)]
    assert statuses == [401, 401, 401]

    status, headers, _body = http_request(limited_server, INFO_REFS, invalid)
    assert status == 429
    assert re.fullmatch(r"[1-9][0-9]*", headers["Retry-After"]), headers["Retry-After"]
    assert int(headers["Retry-After"]) <= 300  # the default GITSRV_AUTH_FAILURE_WINDOW

    status, headers, _body = http_request(limited_server, "/api/v1/token", basic(f"git:{valid}"))
    assert status == 429
    assert int(headers["Retry-After"]) > 0

    result = git.run("ls-remote", limited_server.url("sample", valid), check=False)
    assert result.returncode != 0
    assert "429" in result.stderr
