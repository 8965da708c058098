"""Pushes with the real git CLI: every classification, with and without its scope."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from tests.conftest import copy_sample

ALL_WRITE = ("source:read", "source:read-update", "source:create", "source:delete")


@pytest.fixture
def repo(server, sample, request):
    """A fresh copy of the sample repository, named after the test."""
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")
    copy_sample(server, name)
    return name


def server_ref(git, server, repo: str, ref: str) -> str | None:
    result = git.run("--git-dir", str(server.repos_dir / f"{repo}.git"), "rev-parse", "--verify", "-q", ref, check=False)
    return result.stdout.strip() or None


def clone(git, server, repo: str, token: str, dest: Path) -> Path:
    git.run("clone", "-q", server.url(repo, token), str(dest))
    return dest


def commit(git, work: Path, message: str, filename: str = "change.txt") -> str:
    path = work / filename
    path.write_text((path.read_text() if path.exists() else "") + message + "\n")
    git.run("add", filename, cwd=work)
    git.run("commit", "-q", "-m", message, cwd=work)
    return git.out("rev-parse", "HEAD", cwd=work)


def push(git, work: Path, *args: str):
    return git.run("push", "--porcelain", "origin", *args, cwd=work, check=False)


def test_fast_forward_allowed_with_read_update(git, server, repo, tmp_path):
    work = clone(git, server, repo, server.token("source:read", "source:read-update"), tmp_path / "w")
    new = commit(git, work, "fast-forward")

    result = push(git, work, "main")

    assert result.returncode == 0, result.stderr
    assert server_ref(git, server, repo, "refs/heads/main") == new


def test_fast_forward_rejected_without_read_update(git, server, repo, tmp_path, sample):
    reader = server.token("source:read")
    work = clone(git, server, repo, reader, tmp_path / "w")
    commit(git, work, "fast-forward")
    pusher = server.token("source:create", "source:delete")
    git.run("remote", "set-url", "origin", server.url(repo, pusher), cwd=work)

    result = git.run("push", "origin", "main", cwd=work, check=False)

    assert result.returncode != 0
    assert "! [remote rejected] main -> main (update requires scope source:read-update)" in result.stderr
    assert server_ref(git, server, repo, "refs/heads/main") == sample["main"]


def test_create_needs_source_create(git, server, repo, tmp_path):
    work = clone(git, server, repo, server.token("source:read", "source:read-update"), tmp_path / "w")
    new = commit(git, work, "on a new branch")

    rejected = git.run("push", "origin", "HEAD:refs/heads/topic", cwd=work, check=False)
    assert "! [remote rejected] HEAD -> topic (create requires scope source:create)" in rejected.stderr
    assert server_ref(git, server, repo, "refs/heads/topic") is None

    git.run("remote", "set-url", "origin", server.url(repo, server.token("source:create")), cwd=work)
    accepted = git.run("push", "origin", "HEAD:refs/heads/topic", cwd=work, check=False)
    assert accepted.returncode == 0, accepted.stderr
    assert server_ref(git, server, repo, "refs/heads/topic") == new


def test_create_tag_needs_source_create(git, server, repo, tmp_path, sample):
    work = clone(git, server, repo, server.token("source:read", "source:read-update"), tmp_path / "w")
    git.run("tag", "-a", "-m", "release 2", "v2.0", cwd=work)

    rejected = git.run("push", "origin", "v2.0", cwd=work, check=False)
    assert "! [remote rejected] v2.0 -> v2.0 (create requires scope source:create)" in rejected.stderr

    git.run("remote", "set-url", "origin", server.url(repo, server.token("source:create")), cwd=work)
    accepted = git.run("push", "origin", "v2.0", cwd=work, check=False)
    assert accepted.returncode == 0, accepted.stderr
    assert server_ref(git, server, repo, "refs/tags/v2.0^{commit}") == sample["main"]


def test_delete_needs_source_delete(git, server, repo, tmp_path, sample):
    work = clone(git, server, repo, server.token("source:read", "source:read-update", "source:create"), tmp_path / "w")

    rejected = git.run("push", "origin", ":feature", cwd=work, check=False)
    assert "! [remote rejected] feature (delete requires scope source:delete)" in rejected.stderr
    assert server_ref(git, server, repo, "refs/heads/feature") == sample["feature"]

    git.run("remote", "set-url", "origin", server.url(repo, server.token("source:delete")), cwd=work)
    accepted = git.run("push", "origin", ":feature", cwd=work, check=False)
    assert accepted.returncode == 0, accepted.stderr
    assert server_ref(git, server, repo, "refs/heads/feature") is None


def test_force_push_needs_source_delete(git, server, repo, tmp_path, sample):
    work = clone(git, server, repo, server.token("source:read", "source:read-update", "source:create"), tmp_path / "w")

    rejected = git.run("push", "--force", "origin", "origin/diverged:main", cwd=work, check=False)
    assert "! [remote rejected] origin/diverged -> main (force-push requires scope source:delete)" in rejected.stderr
    assert server_ref(git, server, repo, "refs/heads/main") == sample["main"]

    git.run("remote", "set-url", "origin", server.url(repo, server.token("source:delete")), cwd=work)
    accepted = git.run("push", "--force", "origin", "origin/diverged:main", cwd=work, check=False)
    assert accepted.returncode == 0, accepted.stderr
    assert server_ref(git, server, repo, "refs/heads/main") == sample["diverged"]


def test_moving_a_tag_is_a_force_push(git, server, repo, tmp_path, sample):
    work = clone(git, server, repo, server.token("source:read", "source:read-update", "source:create"), tmp_path / "w")
    tag = sample["light_tag_ref"].removeprefix("refs/tags/")
    # Moving the tag forward along main is still a force-push: tags are immutable.
    git.run("tag", "-f", tag, sample["main"], cwd=work)

    rejected = git.run("push", "--force", "origin", f"refs/tags/{tag}", cwd=work, check=False)
    assert f"! [remote rejected] {tag} -> {tag} (force-push requires scope source:delete)" in rejected.stderr
    assert server_ref(git, server, repo, sample["light_tag_ref"]) == sample["light_tag_target"]

    git.run("remote", "set-url", "origin", server.url(repo, server.token("source:delete")), cwd=work)
    accepted = git.run("push", "--force", "origin", f"refs/tags/{tag}", cwd=work, check=False)
    assert accepted.returncode == 0, accepted.stderr
    assert server_ref(git, server, repo, sample["light_tag_ref"]) == sample["main"]


def test_non_atomic_push_applies_accepted_refs(git, server, repo, tmp_path, sample):
    token = server.token("source:read", "source:read-update", "source:create")
    work = clone(git, server, repo, token, tmp_path / "w")
    new = commit(git, work, "fast-forward in a mixed push")

    result = git.run("push", "--force", "origin", "main", "origin/diverged:feature", cwd=work, check=False)

    assert result.returncode != 0
    assert "! [remote rejected] origin/diverged -> feature (force-push requires scope source:delete)" in result.stderr
    assert re.search(r"[0-9a-f]+\.\.[0-9a-f]+\s+main -> main", result.stderr), result.stderr
    assert server_ref(git, server, repo, "refs/heads/main") == new
    assert server_ref(git, server, repo, "refs/heads/feature") == sample["feature"]


def test_atomic_push_rejects_all(git, server, repo, tmp_path, sample):
    token = server.token("source:read", "source:read-update", "source:create")
    work = clone(git, server, repo, token, tmp_path / "w")
    commit(git, work, "fast-forward in an atomic push")

    result = git.run("push", "--atomic", "--force", "origin", "main", "origin/diverged:feature", cwd=work, check=False)

    assert result.returncode != 0
    assert "! [remote rejected] origin/diverged -> feature (force-push requires scope source:delete)" in result.stderr
    assert "! [remote rejected] main -> main (atomic push failure)" in result.stderr
    assert server_ref(git, server, repo, "refs/heads/main") == sample["main"]
    assert server_ref(git, server, repo, "refs/heads/feature") == sample["feature"]


def object_files(repo_path: Path) -> set[str]:
    objects = repo_path / "objects"
    return {
        str(path.relative_to(objects))
        for path in objects.rglob("*")
        if path.is_file() and not path.relative_to(objects).parts[0].startswith("tmp_objdir")
    }


@pytest.mark.parametrize("size", ["small", "large"])
def test_rejected_push_leaves_no_objects(git, server, repo, tmp_path, size):
    work = clone(git, server, repo, server.token("source:read"), tmp_path / "w")
    if size == "small":
        new = commit(git, work, "never stored")
    else:
        # Over 100 objects: the pack is indexed, not unpacked into loose objects.
        for index in range(120):
            (work / f"many-{index}.txt").write_text(f"file {index}\n")
        git.run("add", ".", cwd=work)
        git.run("commit", "-q", "-m", "many files, never stored", cwd=work)
        new = git.out("rev-parse", "HEAD", cwd=work)
    repo_path = server.repos_dir / f"{repo}.git"
    before = object_files(repo_path)
    git.run("remote", "set-url", "origin", server.url(repo, server.token("source:create")), cwd=work)

    result = git.run("push", "origin", "main", cwd=work, check=False)

    assert "(update requires scope source:read-update)" in result.stderr
    assert object_files(repo_path) == before
    assert git.run("--git-dir", str(repo_path), "cat-file", "-e", new, check=False).returncode != 0
    assert not [p for p in (repo_path / "objects").iterdir() if p.name.startswith("tmp_objdir")]


def test_accepted_large_push_stores_pack(git, server, repo, tmp_path):
    work = clone(git, server, repo, server.token("source:read", "source:read-update"), tmp_path / "w")
    for index in range(120):
        (work / f"many-{index}.txt").write_text(f"file {index}\n")
    git.run("add", ".", cwd=work)
    git.run("commit", "-q", "-m", "many files", cwd=work)
    new = git.out("rev-parse", "HEAD", cwd=work)

    result = git.run("push", "origin", "main", cwd=work, check=False)

    assert result.returncode == 0, result.stderr
    repo_path = server.repos_dir / f"{repo}.git"
    assert git.run("--git-dir", str(repo_path), "fsck", "--connectivity-only", check=False).returncode == 0
    assert server_ref(git, server, repo, "refs/heads/main") == new


def test_stale_old_value_reported_not_ok(git, server, repo, tmp_path, sample):
    token = server.token("source:read", "source:read-update")
    racer = clone(git, server, repo, token, tmp_path / "racer")
    racer_tip = commit(git, racer, "the racing push", filename="racer.txt")
    work = clone(git, server, repo, token, tmp_path / "w")
    commit(git, work, "the slower push")
    # git runs pre-push after it has read the server's refs and before it
    # sends the commands, so another push made there wins the race.
    hook = work / ".git" / "hooks" / "pre-push"
    hook.write_text(
        "#!/bin/sh\n"
        "unset GIT_DIR GIT_WORK_TREE GIT_INDEX_FILE\n"
        f"cd '{racer}' && git push -q origin main >/dev/null 2>&1\n"
        "exit 0\n"
    )
    hook.chmod(hook.stat().st_mode | stat.S_IEXEC)

    result = git.run("push", "origin", "main", cwd=work, check=False)

    assert result.returncode != 0
    expected = (
        f"! [remote rejected] main -> main (stale info: ref is at {racer_tip[:12]}, "
        f"push expected {sample['main'][:12]})"
    )
    assert expected in result.stderr, result.stderr
    assert server_ref(git, server, repo, "refs/heads/main") == racer_tip


def test_push_over_two_mib_is_chunked(git, server, sample, tmp_path):
    server.cli("repo", "create", "chunked/big")
    token = server.token("source:read", "source:create")
    work = clone(git, server, "sample", token, tmp_path / "w")
    git.run("remote", "add", "target", server.url("chunked/big.git", token), cwd=work)
    trace = tmp_path / "curl-trace"

    result = git.run(
        "push", "target", "origin/big:refs/heads/big", cwd=work, check=False,
        env={"GIT_TRACE_CURL": str(trace), "GIT_TRACE_CURL_NO_DATA": "1"},
    )

    assert result.returncode == 0, result.stderr
    text = trace.read_text(errors="replace")
    assert "Transfer-Encoding: chunked" in text
    assert len(re.findall(r"POST /chunked/big.git/git-receive-pack", text)) == 2, "expected probe and push"
    target = server.repos_dir / "chunked" / "big.git"
    size = git.out("--git-dir", str(target), "cat-file", "-s", sample["big_blob"])
    assert int(size) == sample["big_size"] > 2 * 1024 * 1024


def test_push_to_new_empty_repository(git, server, tmp_path):
    server.cli("repo", "create", "fresh/empty")
    token = server.token("source:read", "source:create", "source:read-update")
    work = tmp_path / "w"
    git.run("init", "-q", str(work))
    first = commit(git, work, "first commit")
    git.run("remote", "add", "origin", server.url("fresh/empty", token), cwd=work)

    result = git.run("push", "-u", "origin", "main", cwd=work, check=False)

    assert result.returncode == 0, result.stderr
    assert server_ref(git, server, "fresh/empty", "refs/heads/main") == first
    cloned = clone(git, server, "fresh/empty.git", token, tmp_path / "c")
    assert git.out("rev-parse", "HEAD", cwd=cloned) == first


def test_push_over_https_user_in_url_forms(git, server, repo, tmp_path):
    token = server.token("source:read", "source:read-update")
    work = tmp_path / "w"
    # Token as user name with an empty password: https://TOKEN@host/repo.
    git.run("clone", "-q", f"{server.base_url.replace('://', f'://{token}@')}/{repo}", str(work))
    new = commit(git, work, "pushed with the token as user name")

    result = git.run("push", "origin", "main", cwd=work, check=False)

    assert result.returncode == 0, result.stderr
    assert server_ref(git, server, repo, "refs/heads/main") == new


def test_push_records_audit_rows(git, server, repo, tmp_path):
    from sqlalchemy import select

    from gitsrv.db.engine import Database
    from gitsrv.db.models import Push

    work = clone(git, server, repo, server.token("source:read", "source:read-update", name="auditor"), tmp_path / "w")
    commit(git, work, "audited")
    git.run("push", "origin", "main", "origin/diverged:feature", "--force", cwd=work, check=False)

    database = Database(server.settings())
    try:
        with database.session() as session:
            push_row = session.scalars(select(Push).where(Push.repository == repo)).one()
            updates = {u.ref: (u.classification, u.status, u.reason) for u in push_row.ref_updates}
    finally:
        database.dispose()
    assert updates["refs/heads/main"] == ("update", "ok", None)
    assert updates["refs/heads/feature"] == ("force-push", "rejected", "force-push requires scope source:delete")
    assert push_row.remote_addr == "127.0.0.1"


@pytest.mark.parametrize("version", ["0", "1", "2"])
def test_push_with_each_protocol_version(git, server, repo, tmp_path, version):
    work = clone(git, server, repo, server.token("source:read", "source:read-update"), tmp_path / "w")
    new = commit(git, work, f"pushed over protocol version {version}")
    trace = tmp_path / "trace"

    result = git.run("-c", f"protocol.version={version}", "push", "origin", "main", cwd=work, check=False,
                     env={"GIT_TRACE_PACKET": str(trace)})

    assert result.returncode == 0, result.stderr
    assert server_ref(git, server, repo, "refs/heads/main") == new
    assert ("version 1" in trace.read_text(errors="replace")) is (version == "1")


def test_push_with_gzip_request_body(git, server, repo, sample):
    """A receive-pack request whose body is gzip-encoded, as some clients send."""
    import base64
    import gzip
    import http.client

    from gitsrv.git import pktline

    token = server.token("source:create")
    command = f"{'0' * 40} {sample['main']} refs/heads/from-gzip\0report-status\n".encode()
    empty_pack = bytes.fromhex("5041434b0000000200000000029d08823bd8a8eab510ad6ac75c823cfd3ed31e")
    body = pktline.encode(command) + pktline.FLUSH + empty_pack
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    connection.request("POST", f"/{repo}.git/git-receive-pack", body=gzip.compress(body), headers={
        "Content-Type": "application/x-git-receive-pack-request",
        "Content-Encoding": "gzip",
        "Authorization": "Basic " + base64.b64encode(f"x:{token}".encode()).decode(),
    })
    response = connection.getresponse()
    data = response.read()
    connection.close()

    assert response.status == 200
    assert pktline.encode(b"unpack ok\n") in data
    assert pktline.encode(b"ok refs/heads/from-gzip\n") in data
    assert server_ref(git, server, repo, "refs/heads/from-gzip") == sample["main"]
