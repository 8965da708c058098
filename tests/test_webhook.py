"""CI webhooks: pushes through the real git CLI, delivered to a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import select

from gitsrv.db.engine import Database
from gitsrv.db.models import Delivery, DeliveryAttempt, Event, Token, WebhookTarget
from tests.conftest import Server, copy_sample, free_port

WEBHOOK_SECRET = "webhook-test-secret"
WEBHOOK_PATH = "/hooks/ci"
# Upper bound for waiting on one delivery. Retries start after 0.5 s
# (GITSRV_WEBHOOK_BACKOFF below) and idle workers poll once a second.
DELIVERY_TIMEOUT = 20.0
CI_TRIGGERED = re.compile(r"remote: CI triggered: push event ([0-9a-f-]{36}) queued for (\d+) webhook target")


@dataclass(frozen=True)
class ReceivedRequest:
    """One request the receiver read, and the status it responded with (None when it closed the connection)."""

    path: str
    headers: Message
    body: bytes
    status: int | None
    received_at: float

    @property
    def payload(self) -> dict:
        return json.loads(self.body)


class Receiver:
    """A webhook receiver on 127.0.0.1 that records every request.

    `fail_next(count)` makes the next `count` requests fail, either with
    HTTP 500 or by closing the connection without a response. `stop()` and
    `start()` take it off and back on its port, so deliveries meanwhile
    fail with "connection refused".
    """

    def __init__(self) -> None:
        self.port = free_port()
        self._lock = threading.Lock()
        self._requests: list[ReceivedRequest] = []
        self._failures: list[str] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{WEBHOOK_PATH}"

    def start(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook-receiver", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
        self._server = None

    def fail_next(self, count: int, mode: str = "500") -> None:
        """Make the next `count` requests fail; `mode` is "500" or "close"."""
        if mode not in ("500", "close"):
            raise ValueError(f"invalid failure mode {mode!r}: expected '500' or 'close'")
        with self._lock:
            self._failures.extend([mode] * count)

    def requests_for(self, repository: str) -> list[ReceivedRequest]:
        with self._lock:
            return [r for r in self._requests if r.payload.get("repository") == repository]

    def wait_for(self, repository: str, count: int, server: Server) -> list[ReceivedRequest]:
        """Wait until `count` requests for `repository` arrived; fail after DELIVERY_TIMEOUT."""
        received = wait_until(lambda: len(self.requests_for(repository)) >= count)
        if not received:
            raise AssertionError(
                f"expected {count} webhook request(s) for {repository} within {DELIVERY_TIMEOUT:.0f} s, "
                f"got {len(self.requests_for(repository))}\nserver log:\n{server.log()[-4000:]}"
            )
        return self.requests_for(repository)

    def _record(self, request: ReceivedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _take_failure(self) -> str | None:
        with self._lock:
            return self._failures.pop(0) if self._failures else None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                failure = receiver._take_failure()
                if failure == "close":
                    receiver._record(ReceivedRequest(self.path, self.headers, body, None, time.monotonic()))
                    self.close_connection = True
                    return

                if failure == "500":
                    status, text = 500, b"failure requested by the test\n"
                else:
                    status, text = 200, b"ok\n"
                receiver._record(ReceivedRequest(self.path, self.headers, body, status, time.monotonic()))
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

            def log_message(self, format: str, *args) -> None:
                pass

        return Handler


def wait_until(condition: Callable[[], object], timeout: float = DELIVERY_TIMEOUT) -> object:
    """Poll `condition` every 0.1 s until it is truthy or `timeout` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result or time.monotonic() >= deadline:
            return result
        time.sleep(0.1)


@pytest.fixture(scope="module")
def receiver():
    instance = Receiver()
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory, receiver):
    """The module's gitsrv server, with fast webhook retries and the receiver registered."""
    data_dir = tmp_path_factory.mktemp("gitsrv") / "data"
    instance = Server(data_dir=data_dir, port=free_port())
    instance.env["GITSRV_WEBHOOK_BACKOFF"] = "0.5"
    instance.cli("repo", "list")  # creates and migrates the database
    instance.cli("webhook", "add", "--url", receiver.url, "--secret", WEBHOOK_SECRET)
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture
def repo(server, sample, request):
    """A fresh copy of the sample repository, named after the test."""
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")
    copy_sample(server, name)
    return name


def clone(git, server, repo: str, token: str, dest: Path) -> Path:
    git.run("clone", "-q", server.url(repo, token), str(dest))
    return dest


def commit(git, work: Path, message: str) -> str:
    path = work / "change.txt"
    path.write_text((path.read_text() if path.exists() else "") + message + "\n")
    git.run("add", "change.txt", cwd=work)
    git.run("commit", "-q", "-m", message, cwd=work)
    return git.out("rev-parse", "HEAD", cwd=work)


def event_id_from(push_output: str) -> str:
    match = CI_TRIGGERED.search(push_output)
    assert match, f"no 'CI triggered' line in the push output:\n{push_output}"
    return match.group(1)


def hmac_sha256(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def delivery_rows(server: Server, event_id: str) -> tuple[str, list[tuple[int, int | None, str | None]]]:
    """Return the state of the event's one delivery and its attempts as (number, status, error)."""
    database = Database(server.settings())
    try:
        with database.session() as session:
            delivery = session.scalars(select(Delivery).where(Delivery.event_id == event_id)).one()
            attempts = session.scalars(
                select(DeliveryAttempt).where(DeliveryAttempt.delivery_id == delivery.id).order_by(DeliveryAttempt.number)
            ).all()
            return delivery.state, [(a.number, a.status_code, a.error) for a in attempts]
    finally:
        database.dispose()


def token_id(server: Server, name: str) -> int:
    database = Database(server.settings())
    try:
        with database.session() as session:
            return session.scalars(select(Token.id).where(Token.name == name)).one()
    finally:
        database.dispose()


def test_fast_forward_push_delivers_signed_event(git, server, receiver, repo, sample, tmp_path):
    token = server.token("source:read", "source:read-update", name="webhook-pusher")
    work = clone(git, server, repo, token, tmp_path / "w")
    new = commit(git, work, "fast-forward for CI")

    result = git.run("push", "origin", "main", cwd=work, check=False)

    assert result.returncode == 0, result.stderr
    event_id = event_id_from(result.stderr)
    assert "queued for 1 webhook target(s)" in result.stderr
    [request] = receiver.wait_for(repo, 1, server)
    assert request.path == WEBHOOK_PATH
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Gitsrv-Event"] == "push"
    assert request.headers["X-Gitsrv-Delivery"] == event_id
    assert request.headers["X-Gitsrv-Delivery-Attempt"] == "1"

    signature = request.headers["X-Gitsrv-Signature-256"]
    assert signature == hmac_sha256(WEBHOOK_SECRET, request.body)
    assert signature != hmac_sha256("wrong-secret", request.body)

    payload = request.payload
    assert payload["id"] == event_id
    assert payload["event"] == "push"
    assert payload["repository"] == repo
    assert payload["refs"] == [
        {"ref": "refs/heads/main", "before": sample["main"], "after": new, "classification": "update"}
    ]
    assert payload["token"] == {"id": token_id(server, "webhook-pusher"), "name": "webhook-pusher"}
    assert payload["push_options"] == []
    sent_at = dt.datetime.strptime(payload["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)
    assert abs(dt.datetime.now(dt.timezone.utc) - sent_at) < dt.timedelta(minutes=1)


def test_push_options_passed_through(git, server, receiver, repo, tmp_path):
    work = clone(git, server, repo, server.token("source:read", "source:read-update"), tmp_path / "w")
    commit(git, work, "pushed with options")

    result = git.run("push", "-o", "ci.skip", "-o", "foo=bar", "origin", "main", cwd=work, check=False)

    assert result.returncode == 0, result.stderr
    event_id = event_id_from(result.stderr)
    [request] = receiver.wait_for(repo, 1, server)
    assert request.payload["id"] == event_id
    assert request.payload["push_options"] == ["ci.skip", "foo=bar"]


def test_rejected_push_delivers_nothing(git, server, receiver, repo, tmp_path):
    work = clone(git, server, repo, server.token("source:read"), tmp_path / "w")
    commit(git, work, "never accepted")
    git.run("remote", "set-url", "origin", server.url(repo, server.token("source:create")), cwd=work)

    result = git.run("push", "origin", "main", cwd=work, check=False)

    assert result.returncode != 0
    assert "(update requires scope source:read-update)" in result.stderr
    assert "CI triggered" not in result.stderr
    database = Database(server.settings())
    try:
        with database.session() as session:
            assert session.scalars(select(Event).where(Event.repository == repo)).all() == []
    finally:
        database.dispose()
    # Idle delivery workers poll once a second, so 2.5 s covers at least two polls.
    assert not wait_until(lambda: receiver.requests_for(repo), timeout=2.5)


def test_mixed_push_delivers_accepted_ref_only(git, server, receiver, repo, sample, tmp_path):
    token = server.token("source:read", "source:read-update", "source:create")
    work = clone(git, server, repo, token, tmp_path / "w")
    new = commit(git, work, "fast-forward in a mixed push")

    result = git.run("push", "--force", "origin", "main", "origin/diverged:feature", cwd=work, check=False)

    assert result.returncode != 0
    assert "(force-push requires scope source:delete)" in result.stderr
    event_id = event_id_from(result.stderr)
    [request] = receiver.wait_for(repo, 1, server)
    assert request.payload["id"] == event_id
    assert request.payload["refs"] == [
        {"ref": "refs/heads/main", "before": sample["main"], "after": new, "classification": "update"}
    ]


@pytest.mark.parametrize("failure", ["500", "close"])
def test_failed_attempt_is_retried(git, server, receiver, repo, tmp_path, failure):
    work = clone(git, server, repo, server.token("source:read", "source:read-update"), tmp_path / "w")
    commit(git, work, f"first attempt fails with {failure}")
    receiver.fail_next(1, failure)

    result = git.run("push", "origin", "main", cwd=work, check=False)

    assert result.returncode == 0, result.stderr
    event_id = event_id_from(result.stderr)
    first, second = receiver.wait_for(repo, 2, server)
    assert first.status == (500 if failure == "500" else None)
    assert second.status == 200
    assert first.headers["X-Gitsrv-Delivery"] == event_id
    assert second.headers["X-Gitsrv-Delivery"] == event_id
    assert first.headers["X-Gitsrv-Delivery-Attempt"] == "1"
    assert second.headers["X-Gitsrv-Delivery-Attempt"] == "2"
    assert second.body == first.body
    assert second.headers["X-Gitsrv-Signature-256"] == hmac_sha256(WEBHOOK_SECRET, second.body)
    # The first retry waits GITSRV_WEBHOOK_BACKOFF (0.5 s) with up to 20% jitter.
    assert second.received_at - first.received_at >= 0.4

    # The worker records the attempt only after the receiver has responded.
    assert wait_until(lambda: delivery_rows(server, event_id)[0] == "delivered"), delivery_rows(server, event_id)
    state, attempts = delivery_rows(server, event_id)
    assert [number for number, _status, _error in attempts] == [1, 2]
    failed, succeeded = attempts
    if failure == "500":
        assert failed[1:] == (500, "HTTP 500")
    else:
        assert failed[1] is None
        assert failed[2].startswith("request failed:"), failed
    assert succeeded[1:] == (200, None)


def test_pending_delivery_survives_restart(git, server, receiver, repo, tmp_path):
    work = clone(git, server, repo, server.token("source:read", "source:read-update"), tmp_path / "w")
    commit(git, work, "delivered after a restart")
    receiver.stop()
    try:
        result = git.run("push", "origin", "main", cwd=work, check=False)
        assert result.returncode == 0, result.stderr
        event_id = event_id_from(result.stderr)
        # Wait for one failed attempt, so the server stops with the delivery still pending.
        assert wait_until(lambda: delivery_rows(server, event_id)[1]), "no delivery attempt was recorded"
        server.stop()
    finally:
        receiver.start()

    state, attempts = delivery_rows(server, event_id)
    assert state == "pending"
    assert attempts
    assert all(status is None and error.startswith("request failed:") for _number, status, error in attempts)
    assert receiver.requests_for(repo) == []

    server.start()

    [request] = receiver.wait_for(repo, 1, server)
    assert request.headers["X-Gitsrv-Delivery"] == event_id
    assert int(request.headers["X-Gitsrv-Delivery-Attempt"]) == len(attempts) + 1
    assert wait_until(lambda: delivery_rows(server, event_id)[0] == "delivered"), delivery_rows(server, event_id)


def test_webhook_list_shows_target(server, receiver):
    result = server.cli("webhook", "list")

    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "STATE", "URL"]
    assert lines[1].split() == ["1", "enabled", receiver.url]
    assert len(lines) == 2


@pytest.fixture
def offline_server(tmp_path):
    """A data folder that no server serves, for webhook commands that would add targets to the module's server."""
    return Server(data_dir=tmp_path / "data", port=free_port())


def test_webhook_add_prints_generated_secret(offline_server):
    result = offline_server.cli("webhook", "add", "--url", "http://127.0.0.1:9/ci")

    secret = result.stdout.strip()
    assert result.stdout == secret + "\n"
    assert len(secret) >= 32
    assert "added webhook target 1: http://127.0.0.1:9/ci" in result.stderr
    assert secret not in result.stderr
    database = Database(offline_server.settings())
    try:
        with database.session() as session:
            target = session.scalars(select(WebhookTarget)).one()
    finally:
        database.dispose()
    assert target.secret == secret


def test_webhook_add_with_secret_prints_nothing(offline_server):
    result = offline_server.cli("webhook", "add", "--url", "https://127.0.0.1:9/ci", "--secret", "chosen")

    assert result.stdout == ""
    assert "added webhook target 1: https://127.0.0.1:9/ci" in result.stderr


def test_webhook_add_rejects_bad_url(offline_server):
    result = offline_server.cli("webhook", "add", "--url", "ftp://x", "--secret", "s", check=False)

    assert result.returncode == 2
    assert "invalid URL 'ftp://x': must start with http:// or https://" in result.stderr
    assert "--url" in result.stderr
    assert offline_server.cli("webhook", "list").stdout.splitlines() == [f"{'ID':>4}  {'STATE':<9}  URL"]
