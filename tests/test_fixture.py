"""Tests for the sample repository that repos-fixture/build.py creates."""

from __future__ import annotations

import subprocess

import pytest

from tests.fixture_repos import load_builder

TWO_MIB = 2 * 1024 * 1024


def run_git(repo, *args, check=True, stdin=None):
    return subprocess.run(
        ["git", "--git-dir", str(repo), *args],
        input=stdin,
        capture_output=True,
        check=check,
    )


def git_output(repo, *args):
    return run_git(repo, *args).stdout.decode().strip()


@pytest.fixture(scope="module")
def built_sample(tmp_path_factory):
    # Named apart from the conftest `sample` fixture, which also starts a server.
    repo = tmp_path_factory.mktemp("fixture") / "sample.git"
    ids = load_builder().build_sample(repo)
    return repo, ids


def test_build_twice_identical_refs(tmp_path):
    builder = load_builder()
    first = tmp_path / "first.git"
    second = tmp_path / "second.git"
    first_ids = builder.build_sample(first)
    second_ids = builder.build_sample(second)

    first_refs = git_output(first, "for-each-ref")
    second_refs = git_output(second, "for-each-ref")
    assert first_refs
    assert first_refs == second_refs

    first_ids.pop("path")
    second_ids.pop("path")
    assert first_ids == second_ids


def test_build_rejects_nonempty_destination(tmp_path):
    (tmp_path / "existing.txt").write_text("keep me\n")
    with pytest.raises(FileExistsError):
        load_builder().build_sample(tmp_path)
    assert (tmp_path / "existing.txt").read_text() == "keep me\n"


def test_returned_ids_match_refs(built_sample):
    repo, ids = built_sample
    assert git_output(repo, "rev-parse", "refs/heads/main") == ids["main"]
    assert git_output(repo, "rev-parse", "refs/heads/feature") == ids["feature"]
    assert git_output(repo, "rev-parse", "refs/heads/diverged") == ids["diverged"]
    assert git_output(repo, "rev-parse", "refs/heads/big") == ids["big"]
    assert git_output(repo, "rev-parse", "refs/tags/v1.0-light") == ids["light_tag_target"]
    assert git_output(repo, "rev-parse", "refs/tags/v1.0") == ids["annotated_tag_object"]
    assert git_output(repo, "rev-parse", "refs/tags/v1.0^{commit}") == ids["annotated_tag_target"]
    assert git_output(repo, "rev-parse", "main^") == ids["main_parent"]
    assert git_output(repo, "rev-parse", f"{ids['big']}:{ids['big_path']}") == ids["big_blob"]

    listed_refs = {}
    for line in git_output(repo, "for-each-ref", "--format=%(refname) %(objectname)").splitlines():
        name, object_id = line.split()
        listed_refs[name] = object_id
    assert ids["refs"] == listed_refs


def test_head_points_at_main(built_sample):
    repo, _ = built_sample
    assert git_output(repo, "symbolic-ref", "HEAD") == "refs/heads/main"


def test_repository_passes_fsck(built_sample):
    repo, _ = built_sample
    run_git(repo, "fsck", "--strict")


def test_main_history_length(built_sample):
    repo, ids = built_sample
    assert int(git_output(repo, "rev-list", "--count", "--first-parent", ids["main"])) == 12
    assert int(git_output(repo, "rev-list", "--count", ids["main"])) == 14


def test_merge_commit_has_two_parents(built_sample):
    repo, ids = built_sample
    commit_text = git_output(repo, "cat-file", "-p", ids["merge"])
    parents = [line.split()[1] for line in commit_text.splitlines() if line.startswith("parent ")]
    assert parents == [ids["merge_first_parent"], ids["feature"]]


def test_merge_tree_contains_feature_files(built_sample):
    repo, ids = built_sample
    merge_files = git_output(repo, "ls-tree", "-r", "--name-only", ids["merge"]).splitlines()
    feature_files = git_output(repo, "ls-tree", "-r", "--name-only", ids["feature"]).splitlines()
    assert "src/shout.py" in merge_files
    assert "tests/test_shout.py" in merge_files
    assert set(feature_files) <= set(merge_files)


def test_annotated_tag_is_tag_object(built_sample):
    repo, _ = built_sample
    assert git_output(repo, "cat-file", "-t", "refs/tags/v1.0") == "tag"
    assert git_output(repo, "cat-file", "-t", "refs/tags/v1.0-light") == "commit"


def test_tags_point_at_main_history(built_sample):
    repo, ids = built_sample
    for target in (ids["light_tag_target"], ids["annotated_tag_target"]):
        result = run_git(repo, "merge-base", "--is-ancestor", target, ids["main_parent"], check=False)
        assert result.returncode == 0


def test_diverged_and_main_not_ancestors(built_sample):
    repo, ids = built_sample
    diverged_in_main = run_git(repo, "merge-base", "--is-ancestor", "diverged", "main", check=False)
    main_in_diverged = run_git(repo, "merge-base", "--is-ancestor", "main", "diverged", check=False)
    assert diverged_in_main.returncode == 1
    assert main_in_diverged.returncode == 1
    assert git_output(repo, "merge-base", "diverged", "main") == ids["diverged_base"]


def test_big_branch_contains_main(built_sample):
    repo, _ = built_sample
    result = run_git(repo, "merge-base", "--is-ancestor", "main", "big", check=False)
    assert result.returncode == 0


def test_big_blob_over_two_mib(built_sample):
    repo, ids = built_sample
    assert int(git_output(repo, "cat-file", "-s", ids["big_blob"])) == ids["big_size"]
    assert ids["big_size"] > TWO_MIB


def test_big_blob_stays_large_in_pack(built_sample):
    repo, ids = built_sample
    pack = run_git(repo, "pack-objects", "--stdout", stdin=ids["big_blob"].encode() + b"\n").stdout
    assert len(pack) > TWO_MIB
