"""Clones, fetches and ls-remote with the real git CLI, over protocol v0 and v2."""

from __future__ import annotations

import gzip
import urllib.request

import pytest

from gitsrv.git import pktline


@pytest.fixture(scope="module")
def reader(server, sample):
    return server.token("source:read", name="reader")


@pytest.mark.parametrize("version", ["0", "2"])
def test_clone_with_source_read(git, server, sample, reader, tmp_path, version):
    trace = tmp_path / "packet-trace"
    work = tmp_path / "clone"

    git.run("-c", f"protocol.version={version}", "clone", "-q", server.url("sample.git", reader), str(work),
            env={"GIT_TRACE_PACKET": str(trace)})

    assert git.out("rev-parse", "HEAD", cwd=work) == sample["main"]
    assert git.out("rev-parse", "origin/diverged", cwd=work) == sample["diverged"]
    assert git.run("fsck", "--no-progress", cwd=work).returncode == 0
    speaks_v2 = "version 2" in trace.read_text(errors="replace")
    assert speaks_v2 is (version == "2")


def test_clone_without_git_suffix(git, server, sample, reader, tmp_path):
    git.run("clone", "-q", server.url("sample", reader), str(tmp_path / "c"))
    assert git.out("rev-parse", "HEAD", cwd=tmp_path / "c") == sample["main"]


def test_clone_with_read_update_scope(git, server, sample, tmp_path):
    token = server.token("source:read-update")
    git.run("clone", "-q", server.url("sample", token), str(tmp_path / "c"))
    assert git.out("rev-parse", "HEAD", cwd=tmp_path / "c") == sample["main"]


@pytest.mark.parametrize("scopes", [("source:create", "source:delete"), ("ci:read", "devices:read")])
def test_clone_without_read_scope_is_403(git, server, sample, tmp_path, scopes):
    token = server.token(*scopes)

    result = git.run("clone", "-q", server.url("sample", token), str(tmp_path / "c"), check=False)

    assert result.returncode != 0
    assert "403" in result.stderr
    assert "remote: Reading this repository requires scope source:read" in result.stderr


@pytest.mark.parametrize("version", ["0", "2"])
def test_ls_remote_lists_every_ref(git, server, sample, reader, version):
    output = git.out("-c", f"protocol.version={version}", "ls-remote", server.url("sample", reader))

    listed = {}
    for line in output.splitlines():
        object_id, name = line.split("\t")
        listed[name] = object_id
    for name, object_id in sample["refs"].items():
        assert listed[name] == object_id
    assert listed["HEAD"] == sample["main"]
    assert listed["refs/tags/v1.0^{}"] == sample["annotated_tag_target"]


def test_ls_remote_without_read_scope(git, server, sample):
    result = git.run("ls-remote", server.url("sample", server.token("source:create")), check=False)
    assert result.returncode != 0
    assert "requires scope source:read" in result.stderr


def test_fetch_gets_new_commits(git, server, sample, tmp_path):
    from tests.conftest import copy_sample

    copy_sample(server, "fetched")
    writer = server.token("source:read", "source:read-update")
    reader_clone = tmp_path / "reader"
    git.run("clone", "-q", server.url("fetched", writer), str(reader_clone))
    writer_clone = tmp_path / "writer"
    git.run("clone", "-q", server.url("fetched", writer), str(writer_clone))
    (writer_clone / "new.txt").write_text("new\n")
    git.run("add", "new.txt", cwd=writer_clone)
    git.run("commit", "-q", "-m", "new commit", cwd=writer_clone)
    git.run("push", "-q", "origin", "main", cwd=writer_clone)
    new = git.out("rev-parse", "HEAD", cwd=writer_clone)

    fetched = git.run("fetch", "origin", cwd=reader_clone)
    assert "main       -> origin/main" in fetched.stderr
    assert git.out("rev-parse", "origin/main", cwd=reader_clone) == new

    for version in ("2", "0"):
        noop = git.run("-c", f"protocol.version={version}", "fetch", "origin", cwd=reader_clone)
        assert noop.stderr == ""


@pytest.mark.parametrize("version", ["0", "2"])
def test_shallow_deepen_unshallow(git, server, sample, reader, tmp_path, version):
    work = tmp_path / "shallow"
    config = ["-c", f"protocol.version={version}"]

    git.run(*config, "clone", "-q", "--depth", "1", "--branch", "main", server.url("sample", reader), str(work))
    assert git.out("rev-parse", "--is-shallow-repository", cwd=work) == "true"
    assert git.out("rev-list", "--count", "HEAD", cwd=work) == "1"

    git.run(*config, "fetch", "-q", "--deepen", "2", cwd=work)
    # The tip is a merge, so two more levels reach more than three commits.
    deepened = int(git.out("rev-list", "--count", "HEAD", cwd=work))
    assert deepened > 1

    git.run(*config, "fetch", "-q", "--unshallow", cwd=work)
    assert git.out("rev-parse", "--is-shallow-repository", cwd=work) == "false"
    full = git.out("--git-dir", str(server.repos_dir / "sample.git"), "rev-list", "--count", "main")
    assert git.out("rev-list", "--count", "HEAD", cwd=work) == full
    assert int(full) > deepened


@pytest.mark.parametrize("version", ["0", "2"])
def test_partial_clone_fetches_blobs_lazily(git, server, sample, reader, tmp_path, version):
    work = tmp_path / "partial"
    config = ["-c", f"protocol.version={version}"]

    git.run(*config, "clone", "-q", "--filter=blob:none", "--no-checkout", server.url("sample", reader), str(work))
    missing = git.out("rev-list", "--objects", "--all", "--missing=print", cwd=work)
    assert any(line.startswith("?") for line in missing.splitlines()), "expected blobs left out"

    git.run(*config, "checkout", "-q", "origin/big", cwd=work)

    big = work / sample["big_path"]
    assert big.stat().st_size == sample["big_size"]
    assert git.out("hash-object", str(big), cwd=work) == sample["big_blob"]


@pytest.mark.parametrize("version", ["0", "2"])
def test_single_branch_clone_follows_annotated_tag(git, server, sample, reader, tmp_path, version):
    work = tmp_path / "single"

    git.run("-c", f"protocol.version={version}", "clone", "-q", "--single-branch", "--branch", "main",
            server.url("sample", reader), str(work))

    assert git.out("cat-file", "-t", "refs/tags/v1.0", cwd=work) == "tag"
    assert git.out("rev-parse", "refs/tags/v1.0", cwd=work) == sample["annotated_tag_object"]


def test_gzip_request_body(server, sample, reader):
    body = (
        pktline.encode(f"want {sample['main']} ofs-delta\n".encode())
        + pktline.FLUSH
        + pktline.encode(b"done\n")
    )
    request = urllib.request.Request(
        f"{server.base_url}/sample.git/git-upload-pack",
        data=gzip.compress(body),
        method="POST",
        headers={
            "Content-Type": "application/x-git-upload-pack-request",
            "Content-Encoding": "gzip",
            "Authorization": f"Bearer {reader}",
        },
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        data = response.read()
        content_type = response.headers["Content-Type"]

    assert content_type == "application/x-git-upload-pack-result"
    assert data.startswith(pktline.encode(b"NAK\n"))
    assert b"PACK" in data[:64]
