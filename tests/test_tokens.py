"""Token format, checksum and credential extraction."""

from __future__ import annotations

import base64

import pytest

from gitsrv.auth.credentials import presented_token
from gitsrv.auth.tokens import PREFIX, TOKEN_LENGTH, generate_token, hash_token, is_well_formed


def test_generated_token_format():
    token = generate_token()
    assert token.startswith(PREFIX)
    assert len(token) == TOKEN_LENGTH
    assert is_well_formed(token)


def test_tokens_are_unique():
    assert len({generate_token() for _ in range(200)}) == 200


def test_checksum_rejects_one_changed_character():
    token = generate_token()
    position = len(PREFIX) + 5
    replacement = "A" if token[position] != "A" else "B"
    assert not is_well_formed(token[:position] + replacement + token[position + 1 :])


@pytest.mark.parametrize("bad", ["", "gsv_", "ghp_" + "a" * 49, "gsv_short", "gsv_" + "!" * 49])
def test_malformed_tokens_rejected(bad):
    assert not is_well_formed(bad)


def test_hash_is_sha256_hex():
    assert len(hash_token("x")) == 64
    assert hash_token("x") != hash_token("y")


def basic(value: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(value.encode()).decode()}


CREDENTIAL_CASES = [
    (basic("fio-oauth2:TOKEN"), "TOKEN"),
    (basic("anything:TOKEN"), "TOKEN"),
    (basic("TOKEN"), "TOKEN"),
    (basic("TOKEN:"), "TOKEN"),
    ({"HTTP_AUTHORIZATION": "basic " + base64.b64encode(b"TOKEN").decode()}, "TOKEN"),
    ({"HTTP_AUTHORIZATION": "Bearer TOKEN"}, "TOKEN"),
    ({"HTTP_AUTHORIZATION": "bearer TOKEN"}, "TOKEN"),
    ({"HTTP_OSF_TOKEN": "TOKEN"}, "TOKEN"),
    ({"HTTP_AUTHORIZATION": "Basic !!!notbase64"}, None),
    ({"HTTP_AUTHORIZATION": "Digest abc"}, None),
    ({}, None),
]


@pytest.mark.parametrize("environ,expected", CREDENTIAL_CASES)
def test_presented_token(environ, expected):
    assert presented_token(environ) == expected
