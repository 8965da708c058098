"""The HTTP edge: authentication forms, 401 versus 403, dumb paths, path escapes."""

from __future__ import annotations

import base64
import http.client
import subprocess

import pytest


def request(server, path: str, headers: dict[str, str] | None = None, method: str = "GET", body: bytes | None = None):
    """Send one raw request (the path is sent exactly as given) and return (status, headers, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def basic(value: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(value.encode()).decode()}


INFO_REFS = "/sample.git/info/refs?service=git-upload-pack"


@pytest.fixture(scope="module")
def reader(server, sample):
    return server.token("source:read", name="reader")


def test_healthz_needs_no_token(server):
    status, _headers, body = request(server, "/healthz")
    assert status == 200
    assert body == b"ok\n"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        basic("git:gsv_notatoken"),
        {"Authorization": "Bearer gsv_" + "A" * 49},
        {"Authorization": "Basic %%%"},
    ],
)
def test_missing_or_invalid_token_is_401(server, sample, headers):
    status, response_headers, _body = request(server, INFO_REFS, headers)
    assert status == 401
    assert response_headers["WWW-Authenticate"] == 'Basic realm="gitsrv"'


def test_unknown_repository_without_token_is_401(server, sample):
    status, _headers, _body = request(server, "/no/such/repo.git/info/refs?service=git-upload-pack")
    assert status == 401


def test_unknown_repository_with_token_is_404(server, sample, reader):
    status, _headers, body = request(server, "/no/such/repo.git/info/refs?service=git-upload-pack", basic(f"x:{reader}"))
    assert status == 404
    assert str(server.data_dir).encode() not in body


def test_well_formed_unknown_token_is_401(server, sample):
    from gitsrv.auth.tokens import generate_token

    status, _headers, _body = request(server, INFO_REFS, basic(f"x:{generate_token()}"))
    assert status == 401


def test_revoked_token_is_401(server, sample):
    token = server.token("source:read", name="to-revoke")
    assert request(server, INFO_REFS, basic(f"x:{token}"))[0] == 200
    listing = server.cli("token", "list").stdout
    token_id = [line.split()[0] for line in listing.splitlines() if "to-revoke" in line][0]

    server.cli("token", "revoke", token_id)

    assert request(server, INFO_REFS, basic(f"x:{token}"))[0] == 401


@pytest.mark.parametrize(
    "form",
    ["password", "fio-oauth2", "bare-basic", "lowercase-basic", "user-empty-password", "bearer", "osf-token"],
)
def test_token_presentation_forms(server, sample, reader, form):
    headers = {
        "password": basic(f"anyone:{reader}"),
        "fio-oauth2": basic(f"fio-oauth2:{reader}"),
        "bare-basic": basic(reader),
        "lowercase-basic": {"Authorization": "basic " + base64.b64encode(reader.encode()).decode()},
        "user-empty-password": basic(f"{reader}:"),
        "bearer": {"Authorization": f"Bearer {reader}"},
        "osf-token": {"OSF-TOKEN": reader},
    }[form]
    status, response_headers, body = request(server, INFO_REFS, headers)
    assert status == 200
    assert response_headers["Content-Type"] == "application/x-git-upload-pack-advertisement"
    assert body.startswith(b"001e# service=git-upload-pack\n0000")


def test_clone_with_extraheader(git, server, sample, reader, tmp_path):
    header = "Authorization: basic " + base64.b64encode(reader.encode()).decode()
    git.run("-c", f"http.extraheader={header}", "clone", "-q", server.url("sample"), str(tmp_path / "c"))
    assert git.out("rev-parse", "HEAD", cwd=tmp_path / "c") == sample["main"]


def test_git_without_credentials_gets_401(git, server, sample, tmp_path):
    result = git.run("clone", server.url("sample"), str(tmp_path / "c"), check=False,
                     env={"GIT_TRACE_CURL": str(tmp_path / "trace"), "GIT_TRACE_CURL_NO_DATA": "1"})
    assert result.returncode != 0
    assert "HTTP/1.1 401" in (tmp_path / "trace").read_text(errors="replace")


def test_push_with_read_only_token_is_403(git, server, sample, reader, tmp_path):
    work = tmp_path / "c"
    git.run("clone", "-q", server.url("sample", reader), str(work))

    result = git.run("push", "origin", "main:refs/heads/other", cwd=work, check=False)

    assert result.returncode != 0
    assert "403" in result.stderr
    assert (
        "remote: Pushing requires scope source:create or source:delete or source:read-update"
        in result.stderr
    )


def test_403_body_is_plain_text_naming_scope(server, sample):
    token = server.token("source:create", name="creator")
    status, headers, body = request(server, INFO_REFS, basic(f"x:{token}"))
    assert status == 403
    assert headers["Content-Type"].startswith("text/plain")
    assert b"requires scope source:read" in body
    assert b"(creator)" in body


DUMB_PATHS = [
    "/sample.git/HEAD",
    "/sample.git/info/refs",
    "/sample.git/info/refs?service=git-upload-archive",
    "/sample.git/objects/info/packs",
    "/sample.git/objects/info/alternates",
    "/sample.git/packed-refs",
    "/sample.git/config",
    "/sample.git/description",
    "/sample.git/hooks/pre-receive",
    "/sample.git/refs/heads/main",
]


@pytest.mark.parametrize("path", DUMB_PATHS)
@pytest.mark.parametrize("with_token", [False, True])
def test_dumb_paths_are_404(server, sample, reader, path, with_token):
    headers = basic(f"x:{reader}") if with_token else {}
    status, _headers, body = request(server, path, headers)
    assert status == 404
    assert str(server.data_dir).encode() not in body


def test_loose_object_path_is_404(git, server, sample, reader):
    object_id = sample["root"]
    status, _headers, _body = request(server, f"/sample.git/objects/{object_id[:2]}/{object_id[2:]}", basic(f"x:{reader}"))
    assert status == 404


@pytest.mark.parametrize(
    "path",
    [
        "/../sample.git/info/refs?service=git-upload-pack",
        "/x/../sample.git/info/refs?service=git-upload-pack",
        "/%2e%2e/sample.git/info/refs?service=git-upload-pack",
        "/x/%2E%2E/sample.git/info/refs?service=git-upload-pack",
        "/x/..%2fsample.git/info/refs?service=git-upload-pack",
        "/./sample.git/info/refs?service=git-upload-pack",
    ],
)
def test_path_escapes_are_refused(server, sample, reader, path):
    status, _headers, body = request(server, path, basic(f"x:{reader}"))
    assert status == 404
    assert str(server.data_dir).encode() not in body


def test_symlinked_repository_is_refused(git, server, sample, reader, tmp_path):
    outside = tmp_path / "outside.git"
    subprocess.run(["git", "init", "-q", "--bare", str(outside)], check=True)
    (server.repos_dir / "escape.git").symlink_to(outside)
    (server.repos_dir / "alias.git").symlink_to(server.repos_dir / "sample.git")

    for name in ("escape", "alias"):
        status, _headers, body = request(server, f"/{name}.git/info/refs?service=git-upload-pack", basic(f"x:{reader}"))
        assert status == 404, name
        assert str(tmp_path).encode() not in body


def test_wrong_method_is_405(server, sample, reader):
    status, headers, _body = request(server, "/sample.git/git-upload-pack", basic(f"x:{reader}"))
    assert status == 405
    assert headers["Allow"] == "POST"


def test_wrong_content_type_is_415(server, sample, reader):
    status, _headers, body = request(
        server, "/sample.git/git-upload-pack",
        {**basic(f"x:{reader}"), "Content-Type": "text/plain"}, method="POST", body=b"0000",
    )
    assert status == 415
    assert b"application/x-git-upload-pack-request" in body


def test_receive_pack_probe_returns_empty_200(server, sample):
    token = server.token("source:read-update")
    status, _headers, body = request(
        server, "/sample.git/git-receive-pack",
        {**basic(f"x:{token}"), "Content-Type": "application/x-git-receive-pack-request"},
        method="POST", body=b"0000",
    )
    assert status == 200
    assert body == b""


def test_malformed_receive_pack_request_is_400(server, sample):
    token = server.token("source:read-update")
    status, _headers, body = request(
        server, "/sample.git/git-receive-pack",
        {**basic(f"x:{token}"), "Content-Type": "application/x-git-receive-pack-request"},
        method="POST", body=b"0010not a command0000",
    )
    assert status == 400
    assert b"Invalid receive-pack request" in body
