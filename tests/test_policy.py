"""Table tests of the pure push policy: classification, scopes, ref names."""

from __future__ import annotations

import pytest

from gitsrv.access.policy import (
    ZERO_ID,
    Classification,
    RefUpdate,
    Verdict,
    apply_atomic,
    check_ref_name,
    classify,
    decide,
)
from gitsrv.access.scopes import InvalidScopeError, Scope, format_scopes, parse_scopes

A = "a" * 40
B = "b" * 40

CLASSIFY_CASES = [
    # old, new, ref, fast_forward, expected
    (A, A, "refs/heads/main", False, Classification.READ),
    (ZERO_ID, A, "refs/heads/new", False, Classification.CREATE),
    (ZERO_ID, A, "refs/tags/v1", False, Classification.CREATE),
    (A, ZERO_ID, "refs/heads/old", False, Classification.DELETE),
    (A, ZERO_ID, "refs/tags/v1", False, Classification.DELETE),
    (A, B, "refs/heads/main", True, Classification.UPDATE),
    (A, B, "refs/heads/main", False, Classification.FORCE_PUSH),
    # Tags are immutable: even a fast-forward of a tag is a force-push.
    (A, B, "refs/tags/v1", True, Classification.FORCE_PUSH),
    (A, B, "refs/notes/commits", True, Classification.UPDATE),
]


@pytest.mark.parametrize("old,new,ref,fast_forward,expected", CLASSIFY_CASES)
def test_classify(old, new, ref, fast_forward, expected):
    assert classify(RefUpdate(old, new, ref), fast_forward) is expected


NEEDS_ANCESTRY_CASES = [
    (A, A, "refs/heads/main", False),
    (ZERO_ID, A, "refs/heads/main", False),
    (A, ZERO_ID, "refs/heads/main", False),
    (A, B, "refs/tags/v1", False),
    (A, B, "refs/heads/main", True),
]


@pytest.mark.parametrize("old,new,ref,expected", NEEDS_ANCESTRY_CASES)
def test_needs_ancestry(old, new, ref, expected):
    assert RefUpdate(old, new, ref).needs_ancestry is expected


READ = Scope.SOURCE_READ
UPDATE = Scope.SOURCE_READ_UPDATE
CREATE = Scope.SOURCE_CREATE
DELETE = Scope.SOURCE_DELETE

DECIDE_CASES = [
    # classification, scopes, accepted, reason
    (Classification.READ, set(), True, None),
    (Classification.UPDATE, {UPDATE}, True, None),
    (Classification.UPDATE, {READ, CREATE, DELETE}, False, "update requires scope source:read-update"),
    (Classification.CREATE, {CREATE}, True, None),
    (Classification.CREATE, {UPDATE, DELETE}, False, "create requires scope source:create"),
    (Classification.DELETE, {DELETE}, True, None),
    (Classification.DELETE, {UPDATE, CREATE}, False, "delete requires scope source:delete"),
    (Classification.FORCE_PUSH, {DELETE}, True, None),
    (Classification.FORCE_PUSH, {UPDATE, CREATE}, False, "force-push requires scope source:delete"),
    (Classification.FORCE_PUSH, {Scope.CI_DELETE, Scope.DEVICES_DELETE}, False,
     "force-push requires scope source:delete"),
]


@pytest.mark.parametrize("classification,scopes,accepted,reason", DECIDE_CASES)
def test_decide_scopes(classification, scopes, accepted, reason):
    verdict = decide(RefUpdate(A, B, "refs/heads/main"), classification, scopes)
    assert verdict.accepted is accepted
    assert verdict.reason == reason
    assert verdict.classification is classification


REF_NAME_CASES = [
    ("refs/heads/main", None),
    ("refs/heads/feature/x-1", None),
    ("refs/tags/v1.0", None),
    ("HEAD", "invalid ref name 'HEAD': must be under refs/"),
    ("heads/main", "invalid ref name 'heads/main': must be under refs/"),
    ("refs/heads/a..b", "invalid ref name 'refs/heads/a..b'"),
    ("refs/heads/x.lock", "invalid ref name 'refs/heads/x.lock'"),
    ("refs/heads/with space", "invalid ref name 'refs/heads/with space'"),
    ("refs/heads/tilde~1", "invalid ref name 'refs/heads/tilde~1'"),
    ("refs/heads/colon:x", "invalid ref name 'refs/heads/colon:x'"),
    ("refs/heads/trailing/", "invalid ref name 'refs/heads/trailing/'"),
    ("refs/heads/.hidden", "invalid ref name 'refs/heads/.hidden'"),
    ("refs/heads/at@{1}", "invalid ref name 'refs/heads/at@{1}'"),
]


@pytest.mark.parametrize("ref,reason", REF_NAME_CASES)
def test_check_ref_name(ref, reason):
    assert check_ref_name(ref) == reason


def test_decide_rejects_invalid_name_before_scopes():
    verdict = decide(RefUpdate(ZERO_ID, A, "refs/heads/a..b"), Classification.CREATE, {CREATE})
    assert not verdict.accepted
    assert verdict.reason == "invalid ref name 'refs/heads/a..b'"


REF_LIMIT_CASES = [
    ("refs/heads/main", ("refs/heads/*",), True),
    ("refs/heads/team/x", ("refs/heads/team/*",), True),
    ("refs/heads/main", ("refs/heads/team/*",), False),
    ("refs/tags/v1", ("refs/heads/*", "refs/tags/v*"), True),
]


@pytest.mark.parametrize("ref,limits,accepted", REF_LIMIT_CASES)
def test_decide_ref_limits(ref, limits, accepted):
    verdict = decide(RefUpdate(ZERO_ID, A, ref), Classification.CREATE, {CREATE}, limits)
    assert verdict.accepted is accepted
    if not accepted:
        assert verdict.reason == f"token may only change refs matching {', '.join(limits)}"


def test_apply_atomic_rejects_all_on_one_rejection():
    verdicts = [
        Verdict(Classification.UPDATE, True),
        Verdict(Classification.FORCE_PUSH, False, "force-push requires scope source:delete"),
    ]
    result = apply_atomic(verdicts)
    assert result[0] == Verdict(Classification.UPDATE, False, "atomic push failure")
    assert result[1] == verdicts[1]


def test_apply_atomic_keeps_all_accepted():
    verdicts = [Verdict(Classification.UPDATE, True), Verdict(Classification.CREATE, True)]
    assert apply_atomic(verdicts) == verdicts


def test_parse_scopes_accepts_lists_and_repeats():
    assert parse_scopes(["source:read", "source:create,source:delete"]) == {READ, CREATE, DELETE}
    assert format_scopes({DELETE, READ}) == "source:delete source:read"


def test_parse_scopes_rejects_unknown_with_valid_list():
    with pytest.raises(InvalidScopeError) as error:
        parse_scopes(["source:write"])
    assert "invalid scope 'source:write'" in str(error.value)
    assert "source:read-update" in str(error.value)


@pytest.mark.parametrize("scopes", [set(), {UPDATE}, {CREATE, DELETE}, {READ, UPDATE, CREATE, DELETE}])
@pytest.mark.parametrize("ref_limits", [(), ("refs/heads/ci/*",)])
@pytest.mark.parametrize("ref", ["refs/heads/main", "refs/heads/ci/x", "refs/heads/a..b"])
def test_explain_agrees_with_decide(scopes, ref_limits, ref):
    from gitsrv.access.explain import explain

    permissions = {p.operation: p for p in explain(scopes, (), ref_limits, "any/repo", ref)}

    for classification in (Classification.UPDATE, Classification.CREATE, Classification.DELETE, Classification.FORCE_PUSH):
        verdict = decide(RefUpdate(A, B, ref), classification, scopes, ref_limits)
        permission = permissions[str(classification)]
        assert permission.allowed is verdict.accepted
        assert permission.reason == verdict.reason


def test_explain_outside_repo_limits_denies_everything():
    from gitsrv.access.explain import explain

    permissions = explain({READ, UPDATE}, ("team/*",), (), "other/repo", "refs/heads/main")

    assert [p.allowed for p in permissions] == [False] * 5
    assert permissions[0].reason == "repository other/repo is outside the token's repo limits team/*"
