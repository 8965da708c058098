"""Extract the token a client presents from the HTTP request headers."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping


def _decode_basic(value: str) -> str | None:
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    if ":" not in decoded:
        # A bare token as the whole credential, as sent by
        # `http.extraheader "Authorization: basic <base64 token>"`.
        return decoded or None
    username, _, password = decoded.partition(":")
    # The user name is ignored unless the password is empty, which is how
    # `https://TOKEN@host/repo` arrives.
    return password or username or None


def presented_token(environ: Mapping[str, object]) -> str | None:
    """Return the token a request presents, or None when it presents none.

    Accepted forms are Basic auth with the token as the password (any user
    name), as the user name with an empty password, or as the whole
    credential. `Bearer` and the `OSF-TOKEN` header work too. Scheme words
    match in any case.
    """
    header = environ.get("HTTP_AUTHORIZATION")
    if isinstance(header, str) and header.strip():
        scheme, _, value = header.strip().partition(" ")
        scheme = scheme.lower()
        if scheme == "basic":
            return _decode_basic(value)
        if scheme == "bearer":
            return value.strip() or None
        return None
    osf_token = environ.get("HTTP_OSF_TOKEN")
    if isinstance(osf_token, str) and osf_token.strip():
        return osf_token.strip()
    return None
