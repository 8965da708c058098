"""JSON API: what the presenting token is and what it may do."""

from __future__ import annotations

import json

from werkzeug.wrappers import Request, Response

from gitsrv.access.explain import explain
from gitsrv.access.scopes import format_scopes
from gitsrv.auth.store import Identity
from gitsrv.git.repos import InvalidRepoPathError, normalize_name


def json_response(payload: object, status: int = 200) -> Response:
    return Response(json.dumps(payload, indent=2, sort_keys=True) + "\n", status=status, mimetype="application/json")


def describe_token(identity: Identity) -> dict:
    return {
        "id": identity.token_id,
        "name": identity.name,
        "scopes": format_scopes(identity.scopes).split(),
        "repo_limits": list(identity.repo_limits),
        "ref_limits": list(identity.ref_limits),
        "expires_at": identity.expires_at.isoformat() if identity.expires_at else None,
        "app_id": identity.app_id,
    }


def token_info(request: Request, identity: Identity) -> Response:
    """GET /api/v1/token[?repo=PATH[&ref=REF]]."""
    payload = describe_token(identity)
    repo = request.args.get("repo")
    ref = request.args.get("ref")
    if ref is not None and repo is None:
        return json_response({"error": "the ref parameter needs a repo parameter"}, 400)
    if repo is not None:
        try:
            name = normalize_name(repo)
        except InvalidRepoPathError as error:
            return json_response({"error": str(error)}, 400)
        permissions = explain(identity.scopes, identity.repo_limits, identity.ref_limits, name, ref)
        payload["repo"] = name
        payload["ref"] = ref
        payload["permissions"] = {
            permission.operation: {"allowed": permission.allowed, "reason": permission.reason}
            for permission in permissions
        }
    return json_response(payload)
