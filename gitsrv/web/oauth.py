"""POST /oauth/token: the OAuth2 client-credentials grant (RFC 6749 section 4.4).

authlib implements the protocol: client authentication by basic auth or
form fields, scope validation and the JSON error responses. This module
connects it to werkzeug and stores the issued access tokens as gitsrv tokens,
so they authenticate everywhere an API token does.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections import defaultdict
from functools import cached_property

from authlib.oauth2.rfc6749 import (
    AuthorizationServer,
    ClientMixin,
    OAuth2Payload,
    OAuth2Request,
)
from authlib.oauth2.rfc6749.errors import InvalidScopeError
from authlib.oauth2.rfc6749.grants import ClientCredentialsGrant
from werkzeug.wrappers import Request, Response

from gitsrv.access.scopes import load_stored_scopes, parse_scopes
from gitsrv.auth.apps import check_secret, find_app
from gitsrv.auth.store import create_token
from gitsrv.auth.tokens import generate_token
from gitsrv.db.engine import Database
from gitsrv.db.models import OAuthApp, utcnow

log = logging.getLogger(__name__)


class AppClient(ClientMixin):
    """An OAuth2 application as an authlib client: confidential, client credentials only."""

    def __init__(self, row: OAuthApp) -> None:
        self.row = row

    def get_client_id(self) -> str:
        return self.row.client_id

    def get_default_redirect_uri(self) -> str | None:
        return None

    def get_allowed_scope(self, scope: str | None) -> str:
        granted = {str(s) for s in load_stored_scopes(self.row.scopes)}
        if not scope:
            return " ".join(sorted(granted))
        requested = set(scope.split())
        if not requested <= granted:
            raise InvalidScopeError(
                description=f"scopes not granted to this application: {' '.join(sorted(requested - granted))}"
            )
        return " ".join(sorted(requested))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False

    def check_client_secret(self, client_secret: str) -> bool:
        return check_secret(self.row, client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return endpoint == "token" and method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == ClientCredentialsGrant.GRANT_TYPE


class _FormPayload(OAuth2Payload):
    def __init__(self, request: Request) -> None:
        self._request = request

    @property
    def data(self):
        return self._request.form

    @cached_property
    def datalist(self):
        values = defaultdict(list)
        for key in self._request.form:
            values[key].extend(self._request.form.getlist(key))
        return values


class _WerkzeugRequest(OAuth2Request):
    def __init__(self, request: Request) -> None:
        # authlib refuses plain-http URIs. gitsrv hands out access tokens over
        # the same transport git uses to send tokens, so TLS is decided by
        # how the server is deployed (--certfile or a TLS proxy), not here.
        uri = "https" + request.url[request.url.index(":") :]
        super().__init__(method=request.method, uri=uri, headers=request.headers)
        self._request = request
        self.payload = _FormPayload(request)

    @property
    def args(self):
        return self._request.args

    @property
    def form(self):
        return self._request.form


class ClientCredentials(ClientCredentialsGrant):
    """The client-credentials grant, with client authentication by basic auth or form fields."""

    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

    def validate_requested_scope(self) -> None:
        # Raises invalid_scope for a scope the application was not granted.
        self.request.client.get_allowed_scope(self.request.payload.scope)


class TokenEndpoint(AuthorizationServer):
    """The token endpoint, issuing gitsrv access tokens that expire."""

    def __init__(self, database: Database, lifetime: int) -> None:
        super().__init__(scopes_supported=None)
        self.database = database
        self.lifetime = lifetime
        self.register_grant(ClientCredentials)
        self.register_token_generator("default", self._generate)

    def _generate(self, grant_type, client, user=None, scope=None, expires_in=None, include_refresh_token=True):
        return {
            "token_type": "Bearer",
            "access_token": generate_token(),
            "expires_in": self.lifetime,
            # The application's scopes, or the subset the request names.
            "scope": client.get_allowed_scope(scope),
        }

    def query_client(self, client_id):
        with self.database.session() as session:
            row = find_app(session, client_id)
        return AppClient(row) if row is not None else None

    def save_token(self, token, request) -> None:
        client: AppClient = request.client
        expires_at = utcnow() + dt.timedelta(seconds=int(token["expires_in"]))
        with self.database.session() as session:
            row, _ = create_token(
                session,
                f"oauth:{client.row.name}",
                parse_scopes([token.get("scope", "")]),
                expires_at=expires_at,
                app_id=client.row.id,
                secret=token["access_token"],
            )
            session.commit()
            log.info("issued access token %d to app %d (%s), scopes: %s", row.id, client.row.id, client.row.name, token.get("scope", ""))

    def send_signal(self, name, *args, **kwargs) -> None:
        pass

    def create_oauth2_request(self, request) -> OAuth2Request:
        return _WerkzeugRequest(request)

    def create_json_request(self, request):
        raise NotImplementedError("gitsrv serves only the token endpoint")

    def handle_response(self, status, body, headers) -> Response:
        headers = dict(headers)
        if isinstance(body, dict) and body.get("error") == "invalid_client":
            # authlib's text names the authentication methods, which misleads
            # a client whose id or secret is simply wrong or revoked.
            body["error_description"] = (
                "client authentication failed: unknown or revoked client id, or wrong client secret"
            )
            if "WWW-Authenticate" in headers:
                headers["WWW-Authenticate"] = 'Basic realm="gitsrv", error="invalid_client"'
        return Response(json.dumps(body), status=status, headers=headers, mimetype="application/json")

    def respond(self, request: Request) -> Response:
        """Handle POST /oauth/token."""
        if not request.form.get("grant_type"):
            # RFC 6749 section 5.2: a missing required parameter is invalid_request.
            return self.handle_response(
                400,
                {"error": "invalid_request", "error_description": "missing grant_type parameter"},
                [("Cache-Control", "no-store"), ("Pragma", "no-cache")],
            )
        return self.create_token_response(request)
