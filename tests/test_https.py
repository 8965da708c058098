"""Serving over HTTPS with `gitsrv serve --certfile/--keyfile`, using a self-signed certificate."""

from __future__ import annotations

import re
import ssl
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import Server, copy_sample, free_port


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its private key, as (cert, key)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", "2",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


@pytest.fixture(scope="module")
def server(tmp_path_factory, tls_files):
    """The module's gitsrv server, serving HTTPS only."""
    cert, key = tls_files
    data_dir = tmp_path_factory.mktemp("gitsrv") / "data"
    instance = Server(data_dir=data_dir, port=free_port(), scheme="https")
    instance.serve_args = ["--certfile", str(cert), "--keyfile", str(key)]
    instance.cli("repo", "list")  # creates and migrates the database
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture
def repo(server, sample, request):
    """A fresh copy of the sample repository, named after the test."""
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")
    copy_sample(server, name)
    return name


def test_health_check_over_https(server, tls_files):
    cert, _key = tls_files
    context = ssl.create_default_context(cafile=str(cert))

    with urllib.request.urlopen(f"{server.base_url}/healthz", timeout=10, context=context) as response:
        assert response.status == 200


def test_clone_and_push_trusting_certificate(git, server, repo, sample, tls_files, tmp_path):
    cert, _key = tls_files
    token = server.token("source:read", "source:read-update")
    work = tmp_path / "w"

    git.run("-c", f"http.sslCAInfo={cert}", "clone", "-q", server.url(repo, token), str(work))

    assert git.out("rev-parse", "HEAD", cwd=work) == sample["main"]
    (work / "change.txt").write_text("pushed over HTTPS\n")
    git.run("add", "change.txt", cwd=work)
    git.run("commit", "-q", "-m", "pushed over HTTPS", cwd=work)
    new = git.out("rev-parse", "HEAD", cwd=work)

    result = git.run("push", "origin", "main", cwd=work, check=False, env={"GIT_SSL_CAINFO": str(cert)})

    assert result.returncode == 0, result.stderr
    server_head = git.out("--git-dir", str(server.repos_dir / f"{repo}.git"), "rev-parse", "refs/heads/main")
    assert server_head == new


def test_clone_without_trust_fails(git, server, repo, tmp_path):
    token = server.token("source:read")

    result = git.run("clone", "-q", server.url(repo, token), str(tmp_path / "w"), check=False)

    assert result.returncode != 0
    # libcurl built with GnuTLS (Debian's git) reports the first message, libcurl built with OpenSSL the second.
    assert re.search(r"server certificate verification failed|SSL certificate problem", result.stderr), result.stderr
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("given", ["--certfile", "--keyfile"])
def test_serve_needs_cert_and_key(server, tls_files, given):
    cert, key = tls_files
    path = cert if given == "--certfile" else key

    result = server.cli("serve", "--bind", f"127.0.0.1:{free_port()}", given, str(path), check=False)

    assert result.returncode == 2
    assert "Error: --certfile and --keyfile must be given together" in result.stderr
    assert result.stdout == ""
