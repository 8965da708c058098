"""The WSGI application: health check, authentication, then the git endpoints.

Order of checks: match a smart-HTTP endpoint (404 for everything else,
including dumb-HTTP paths, with or without a token), authenticate the token (401),
check the scope the service needs (403), then look the repository up
(404). Authentication comes before the lookup so that an anonymous client
cannot probe which repositories exist.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Request, Response

from gitsrv.access.scopes import FETCH_SCOPES, PUSH_SCOPES, Scope, format_scopes
from gitsrv.auth.credentials import presented_token
from gitsrv.auth.ratelimit import FailureLimiter
from gitsrv.auth.store import Identity, LastUsedTracker, authenticate
from gitsrv.config import Settings
from gitsrv.db.engine import Database
from gitsrv.git import pktline, receive_pack, upload_pack
from gitsrv.git.repos import (
    Repository,
)
from gitsrv.push import PushContext, PushServices, receive
from gitsrv.web import api
from gitsrv.web.body import UnsupportedEncodingError, request_body
from gitsrv.web.ci_api import CIApi
from gitsrv.web.oauth import TokenEndpoint
from gitsrv.web.visibility import visible_repository
from gitsrv.webhook.delivery import DeliveryWorker

log = logging.getLogger(__name__)

UPLOAD_PACK = "git-upload-pack"
RECEIVE_PACK = "git-receive-pack"
SMART_PATH = re.compile(r"^/(?P<repo>.+?)/(?P<endpoint>info/refs|git-upload-pack|git-receive-pack)$")
NO_CACHE = {
    "Expires": "Fri, 01 Jan 1980 00:00:00 GMT",
    "Pragma": "no-cache",
    "Cache-Control": "no-cache, max-age=0, must-revalidate",
}


def text_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(message.rstrip("\n") + "\n", status=status, mimetype="text/plain", headers=headers)


def unauthorized() -> Response:
    return text_response(
        401,
        "Authentication required: send an API token as the password (any user name).",
        {"WWW-Authenticate": 'Basic realm="gitsrv"'},
    )


def not_found() -> Response:
    return text_response(404, "Not found.")


def missing_scope(identity: Identity, action: str, needed: Iterable[Scope]) -> Response:
    needed_text = " or ".join(sorted(str(scope) for scope in needed))
    has = format_scopes(identity.scopes) or "no scopes"
    return text_response(
        403,
        f"{action} requires scope {needed_text}; token {identity.token_id} ({identity.name}) has {has}.",
    )


class GitServer:
    """The gitsrv WSGI application."""

    def __init__(self, settings: Settings, database: Database, delivery: DeliveryWorker | None = None) -> None:
        self.settings = settings
        self.database = database
        self.delivery = delivery
        self.push_services = PushServices(database, settings, delivery)
        self.ci_api = CIApi(settings, database, delivery)
        self.pack_cache = (
            upload_pack.PackCache(settings.pack_cache_dir, settings.pack_cache_max_bytes)
            if settings.pack_cache
            else None
        )
        self.limiter = FailureLimiter(database, settings.auth_failure_limit, settings.auth_failure_window)
        self.last_used = LastUsedTracker()
        self.token_endpoint = TokenEndpoint(database, settings.access_token_lifetime)

    def __call__(self, environ, start_response):
        request = Request(environ)
        try:
            response = self.dispatch(request)
        except HTTPException as error:
            response = error.get_response(environ)
        return response(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        if request.path == "/healthz":
            return text_response(200, "ok")
        if request.path == "/oauth/token":
            if request.method != "POST":
                return text_response(405, "Method not allowed.", {"Allow": "POST"})
            return self._token_endpoint(request)
        if request.path == "/api/v1/token" or self.ci_api.matches(request.path):
            identity, error_response = self._authenticate(request)
            if identity is None:
                return error_response
            if request.path == "/api/v1/token":
                return api.token_info(request, identity)
            return self.ci_api.dispatch(request, identity)

        # Paths other than the smart-HTTP endpoints (dumb-HTTP files, config,
        # hooks) are never served, so they are 404 with or without a token.
        match = SMART_PATH.match(request.path)
        if match is None:
            return not_found()
        endpoint = match["endpoint"]
        service = request.args.get("service") if endpoint == "info/refs" else endpoint
        if service not in (UPLOAD_PACK, RECEIVE_PACK):
            return not_found()

        identity, error_response = self._authenticate(request)
        if identity is None:
            return error_response

        allowed_method = "GET" if endpoint == "info/refs" else "POST"
        if request.method != allowed_method:
            return text_response(405, "Method not allowed.", {"Allow": allowed_method})

        if service == UPLOAD_PACK and not identity.scopes & FETCH_SCOPES:
            return missing_scope(identity, "Reading this repository", [Scope.SOURCE_READ])
        if service == RECEIVE_PACK and not identity.scopes & PUSH_SCOPES:
            return missing_scope(identity, "Pushing", PUSH_SCOPES)

        repository = visible_repository(self.settings.repos_dir, identity, match["repo"])
        if repository is None:
            return not_found()

        if endpoint == "info/refs":
            return self._info_refs(request, repository, service)
        if service == UPLOAD_PACK:
            return self._upload_pack(request, repository)
        return self._receive_pack(request, repository, identity)

    def _authenticate(self, request: Request) -> tuple[Identity | None, Response | None]:
        """Return the request's identity, or None and the 401 or 429 response to send."""
        address = request.remote_addr or "unknown"
        if self.limiter.retry_after(address) is not None:
            return None, self._too_many(address)
        token = presented_token(request.environ)
        if token is None:
            return None, unauthorized()
        with self.database.session() as session:
            identity = authenticate(session, token)
            if identity is not None and self.last_used.due(identity.token_id):
                self.last_used.record(session, identity.token_id)
        if identity is None:
            if self._count_failure(address, "authentication failed: remote=%s path=%s", address, request.path):
                return None, self._too_many(address)
            return None, unauthorized()
        return identity, None

    def _token_endpoint(self, request: Request) -> Response:
        """Issue an access token, counting failed client authentications like failed tokens."""
        address = request.remote_addr or "unknown"
        if self.limiter.retry_after(address) is not None:
            return self._too_many(address)
        response = self.token_endpoint.respond(request)
        if response.status_code == 401:
            client_id = request.authorization.username if request.authorization else request.form.get("client_id")
            if self._count_failure(address, "client authentication failed: remote=%s client_id=%s", address, client_id):
                return self._too_many(address)
        return response

    def _count_failure(self, address: str, message: str, *args: object) -> bool:
        """Record and log a failed authentication; return whether the address is now past the limit.

        The count comes from the database, so it includes failures that other
        processes saw.
        """
        count = self.limiter.record_failure(address)
        log.warning(message + " failures=%d", *args, count)
        return self.limiter.is_over_limit(count)

    def _too_many(self, address: str) -> Response:
        retry_after = self.limiter.retry_after(address) or int(self.limiter.window)
        return text_response(
            429,
            f"Too many failed authentications from {address}; retry in {retry_after} s.",
            {"Retry-After": str(retry_after)},
        )

    def _info_refs(self, request: Request, repository: Repository, service: str) -> Response:
        git_protocol = request.headers.get("Git-Protocol")
        version = upload_pack.protocol_version(git_protocol)
        if service == UPLOAD_PACK:
            advertisement = upload_pack.advertise_refs(repository.path, git_protocol)
        else:
            # receive-pack has no protocol v2: a client asking for it gets v0,
            # as from git-receive-pack itself.
            version = 1 if version == 1 else 0
            advertisement = receive_pack.advertise_refs(repository.path, version)
        body = b""
        if version != 2:
            body = pktline.encode(f"# service={service}\n".encode()) + pktline.FLUSH
        return Response(
            body + advertisement,
            mimetype=f"application/x-{service}-advertisement",
            headers=NO_CACHE,
        )

    def _check_request_type(self, request: Request, service: str) -> Response | None:
        expected = f"application/x-{service}-request"
        if request.mimetype != expected:
            return text_response(415, f"Unsupported Content-Type {request.mimetype!r}: expected {expected}.")
        return None

    def _upload_pack(self, request: Request, repository: Repository) -> Response:
        error = self._check_request_type(request, UPLOAD_PACK)
        if error is not None:
            return error
        try:
            body = request_body(request.environ)
        except UnsupportedEncodingError as exc:
            return text_response(415, f"{exc}.")
        stream = upload_pack.serve(
            repository.path, body, request.headers.get("Git-Protocol"), repository.name, self.pack_cache
        )
        return Response(
            stream,
            mimetype=f"application/x-{UPLOAD_PACK}-result",
            headers=NO_CACHE,
            direct_passthrough=True,
        )

    def _receive_pack(self, request: Request, repository: Repository, identity: Identity) -> Response:
        error = self._check_request_type(request, RECEIVE_PACK)
        if error is not None:
            return error
        try:
            body = request_body(request.environ)
        except UnsupportedEncodingError as exc:
            return text_response(415, f"{exc}.")
        context = PushContext(repository, identity, request.remote_addr, identity.ref_limits)
        try:
            stream = receive(body, context, self.push_services)
        except pktline.ProtocolError as exc:
            log.warning("invalid receive-pack request: repo=%s token=%d error=%s", repository.name, identity.token_id, exc)
            return text_response(400, f"Invalid receive-pack request: {exc}.")
        return Response(
            stream,
            mimetype=f"application/x-{RECEIVE_PACK}-result",
            headers=NO_CACHE,
            direct_passthrough=True,
        )
