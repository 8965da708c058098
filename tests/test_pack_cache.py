"""The pack cache in front of git pack-objects: hits, misses, concurrency, eviction."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gitsrv.git import pack_cache
from tests.conftest import Server, free_port, load_builder

HOOK = Path(pack_cache.__file__)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    path = tmp_path_factory.mktemp("cache-repo") / "sample.git"
    ids = load_builder().build_sample(path)
    return path, ids


def make_wrapper(folder: Path, delay: float = 0.0) -> Path:
    """A stand-in for `git` that records each pack-objects run, then runs git."""
    wrapper = folder / "counting-git"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"echo run >> '{folder / 'runs'}'\n"
        f"sleep {delay}\n"
        'exec git "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper


def runs(folder: Path) -> int:
    path = folder / "runs"
    return len(path.read_text().splitlines()) if path.exists() else 0


def run_hook(repo_path: Path, cache: Path, wrapper: Path, request: str, *options: str,
             max_bytes: int | None = None, git_options: tuple[str, ...] = ()) -> bytes:
    environ = {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}
    environ.update(GIT_DIR=str(repo_path), GITSRV_PACK_CACHE_DIR=str(cache))
    if max_bytes is not None:
        environ["GITSRV_PACK_CACHE_MAX_BYTES"] = str(max_bytes)
    result = subprocess.run(
        [sys.executable, str(HOOK), str(wrapper), *git_options, "pack-objects", "--revs", "--stdout",
         "--delta-base-offset", *options],
        input=request.encode(),
        capture_output=True,
        env=environ,
        cwd=repo_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.startswith(b"PACK")
    return result.stdout


def cache_entries(cache: Path) -> list[Path]:
    return [p for p in cache.glob("*/*") if p.suffix not in (".lock", ".tmp")]


def test_same_request_served_from_cache(repo, tmp_path):
    repo_path, ids = repo
    wrapper = make_wrapper(tmp_path)
    cache = tmp_path / "cache"

    first = run_hook(repo_path, cache, wrapper, f"{ids['main']}\n")
    second = run_hook(repo_path, cache, wrapper, f"{ids['main']}\n")

    assert runs(tmp_path) == 1
    assert second == first
    assert len(cache_entries(cache)) == 1


def test_progress_options_share_an_entry(repo, tmp_path):
    repo_path, ids = repo
    wrapper = make_wrapper(tmp_path)
    cache = tmp_path / "cache"

    first = run_hook(repo_path, cache, wrapper, f"{ids['main']}\n", "-q")
    second = run_hook(repo_path, cache, wrapper, f"{ids['main']}\n", "--progress")

    assert runs(tmp_path) == 1
    assert second == first


def test_different_wants_or_haves_miss(repo, tmp_path):
    repo_path, ids = repo
    wrapper = make_wrapper(tmp_path)
    cache = tmp_path / "cache"

    run_hook(repo_path, cache, wrapper, f"{ids['main']}\n")
    run_hook(repo_path, cache, wrapper, f"{ids['diverged']}\n")
    run_hook(repo_path, cache, wrapper, f"{ids['main']}\n--not\n{ids['main_parent']}\n")

    assert runs(tmp_path) == 3
    assert len(cache_entries(cache)) == 3


def test_moved_ref_misses(repo, tmp_path):
    repo_path, ids = repo
    wrapper = make_wrapper(tmp_path)
    cache = tmp_path / "cache"
    run_hook(repo_path, cache, wrapper, f"{ids['main']}\n")

    subprocess.run(["git", "--git-dir", str(repo_path), "update-ref", "refs/heads/moved", ids["main_parent"]], check=True)
    try:
        run_hook(repo_path, cache, wrapper, f"{ids['main']}\n")
    finally:
        subprocess.run(["git", "--git-dir", str(repo_path), "update-ref", "-d", "refs/heads/moved"], check=True)

    assert runs(tmp_path) == 2


def test_shallow_file_content_is_the_key(repo, tmp_path):
    repo_path, ids = repo
    wrapper = make_wrapper(tmp_path)
    cache = tmp_path / "cache"
    # upload-pack names a new temporary shallow file for every request.
    first_file = tmp_path / "shallow-1"
    second_file = tmp_path / "shallow-2"
    other_file = tmp_path / "shallow-3"
    first_file.write_text(f"{ids['main_parent']}\n")
    second_file.write_text(f"{ids['main_parent']}\n")
    other_file.write_text(f"{ids['merge_first_parent']}\n")

    first = run_hook(repo_path, cache, wrapper, f"{ids['main']}\n", git_options=("--shallow-file", str(first_file)))
    second = run_hook(repo_path, cache, wrapper, f"{ids['main']}\n", git_options=("--shallow-file", str(second_file)))
    run_hook(repo_path, cache, wrapper, f"{ids['main']}\n", git_options=("--shallow-file", str(other_file)))

    assert second == first
    assert runs(tmp_path) == 2


def test_concurrent_fills_run_pack_objects_once(repo, tmp_path):
    repo_path, ids = repo
    wrapper = make_wrapper(tmp_path, delay=1.0)
    cache = tmp_path / "cache"

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        outputs = list(pool.map(lambda _: run_hook(repo_path, cache, wrapper, f"{ids['main']}\n"), range(8)))

    assert runs(tmp_path) == 1
    assert all(output == outputs[0] for output in outputs)
    assert not list(cache.glob("*/*.tmp"))


def test_eviction_keeps_cache_within_limit(repo, tmp_path):
    repo_path, ids = repo
    wrapper = make_wrapper(tmp_path)
    cache = tmp_path / "cache"
    sizes = []
    wants = [ids["main"], ids["diverged"], ids["feature"]]
    for want in wants[:1]:
        sizes.append(len(run_hook(repo_path, cache, wrapper, f"{want}\n")))
    limit = int(sizes[0] * 1.5)

    for want in wants[1:]:
        run_hook(repo_path, cache, wrapper, f"{want}\n", max_bytes=limit)

    entries = cache_entries(cache)
    assert sum(p.stat().st_size for p in entries) <= limit
    assert len(entries) < len(wants)
    # The newest entry survives: asking again runs nothing.
    before = runs(tmp_path)
    run_hook(repo_path, cache, wrapper, f"{wants[-1]}\n", max_bytes=limit)
    assert runs(tmp_path) == before


def test_without_cache_dir_runs_pack_objects_each_time(repo, tmp_path):
    repo_path, ids = repo
    wrapper = make_wrapper(tmp_path)
    environ = {key: value for key, value in os.environ.items() if not key.startswith(("GIT_", "GITSRV_"))}
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, str(HOOK), str(wrapper), "pack-objects", "--revs", "--stdout"],
            input=f"{ids['main']}\n".encode(), capture_output=True, env={**environ, "GIT_DIR": str(repo_path)},
            cwd=repo_path, timeout=60,
        )
        assert result.returncode == 0
    assert runs(tmp_path) == 2


def received_pack(clone: Path) -> bytes:
    packs = list((clone / "objects" / "pack").glob("*.pack"))
    assert len(packs) == 1
    return packs[0].read_bytes()


@pytest.mark.parametrize("enabled", [True, False])
def test_server_clones_through_cache(git, tmp_path, enabled):
    server = Server(data_dir=tmp_path / "data", port=free_port(), env={} if enabled else {"GITSRV_PACK_CACHE": "off"})
    server.cli("repo", "list")
    ids = load_builder().build_sample(server.repos_dir / "sample.git")
    server.start()
    try:
        token = server.token("source:read", "source:read-update")
        git.run("clone", "-q", "--bare", server.url("sample", token), str(tmp_path / "first.git"))
        git.run("clone", "-q", "--bare", server.url("sample", token), str(tmp_path / "second.git"))
        cache = server.data_dir / "cache" / "packs"

        if not enabled:
            assert not cache.exists() or not cache_entries(cache)
            assert received_pack(tmp_path / "second.git").startswith(b"PACK")
            return
        assert len(cache_entries(cache)) == 1
        assert received_pack(tmp_path / "first.git") == received_pack(tmp_path / "second.git")

        work = tmp_path / "work"
        git.run("clone", "-q", server.url("sample", token), str(work))
        (work / "new.txt").write_text("new\n")
        git.run("add", "new.txt", cwd=work)
        git.run("commit", "-q", "-m", "moves main", cwd=work)
        git.run("push", "-q", "origin", "main", cwd=work)
        new = git.out("rev-parse", "HEAD", cwd=work)

        # An incremental fetch sends haves, so it bypasses the cache.
        git.run("--git-dir", str(tmp_path / "first.git"), "fetch", "-q", server.url("sample", token),
                "refs/heads/main:refs/heads/main")
        assert git.out("--git-dir", str(tmp_path / "first.git"), "rev-parse", "main") == new
        assert len(cache_entries(cache)) == 1

        git.run("clone", "-q", "--bare", server.url("sample", token), str(tmp_path / "third.git"))
        # The moved ref made the third clone miss, so it got its own entry.
        assert len(cache_entries(cache)) == 2
        assert git.out("--git-dir", str(tmp_path / "third.git"), "rev-parse", "main") == new
        assert git.out("--git-dir", str(tmp_path / "third.git"), "rev-parse", "main^") == ids["main"]
    finally:
        server.stop()


def test_repository_with_bitmap_bypasses_cache(tmp_path):
    import io

    from gitsrv.git.upload_pack import PackCache, choose_cache

    repo_path = tmp_path / "bitmapped.git"
    load_builder().build_sample(repo_path)
    cache = PackCache(tmp_path / "cache", 1 << 20)
    request = b"0032want " + b"a" * 40 + b"\n00000009done\n"

    assert choose_cache(repo_path, io.BufferedReader(io.BytesIO(request)), cache) == (request, cache)
    subprocess.run(["git", "--git-dir", str(repo_path), "repack", "-a", "-d", "-q", "--write-bitmap-index"], check=True)
    assert choose_cache(repo_path, io.BufferedReader(io.BytesIO(request)), cache) == (request, None)
