"""CI webhooks: what a push records and sends, to a real HTTP receiver on 127.0.0.1.

Delivery mechanics (retries, backoff, restarts, disabling, redelivery, the
CI API, several servers on one database) are in test_ci_delivery.py, which
reuses the receiver and helpers defined here.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
import shutil
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
from gitsrv.webhook.addresses import TargetURLError, resolve_target
from tests.conftest import ZERO_ID, Server, copy_sample, free_port

WEBHOOK_SECRET = "webhook-test-secret"
WEBHOOK_PATH = "/hooks/ci"
# Upper bound for waiting on one delivery. Retries start after 0.5 s
# (GITSRV_WEBHOOK_BACKOFF below) and idle workers poll once a second.
DELIVERY_TIMEOUT = 20.0
# Push output lines about a stored event contain its id, except
# "CI triggered: <url>", which shows the CI system's URL instead.
EVENT_LINE = re.compile(
    r"remote: CI (?:triggered|trigger queued|trigger failed|skipped): event ([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
)
MAX_COMMITS = 3
# Start of the error for an unsafe target address. The wording changed from
# "refused" to "rejected", and the tests accept both.
UNSAFE_ADDRESS_ERROR = r"(refused|rejected) URL"


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

    @property
    def delivery(self) -> str:
        return self.headers["X-Gitsrv-Delivery"]

    @property
    def attempt(self) -> int:
        return int(self.headers["X-Gitsrv-Delivery-Attempt"])


class Receiver:
    """A webhook receiver on 127.0.0.1 that records every request, on any path.

    By default it responds 200 with a text body at once. `response_json` makes
    the 200 response body that JSON object, and `delay` sleeps that many
    seconds before responding. `fail_next(count)` makes the next `count` requests
    fail, either with HTTP 500 or by closing the connection without a
    response. Setting `failing` makes every request fail with HTTP 500, and
    `fail_first_attempts` every request with X-Gitsrv-Delivery-Attempt 1.
    `stop()` and `start()` take it off and back on its port, so deliveries
    meanwhile fail with "connection refused".
    """

    def __init__(self, response_json: dict | None = None, delay: float = 0.0) -> None:
        self.port = free_port()
        self.response_json = response_json
        self.delay = delay
        self.failing = False
        self.fail_first_attempts = False
        self._lock = threading.Lock()
        self._requests: list[ReceivedRequest] = []
        # Pending failures as (mode, repository or None for any repository).
        self._failures: list[tuple[str, str | None]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return self.url_at(WEBHOOK_PATH)

    def url_at(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

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

    def fail_next(self, count: int, mode: str = "500", repository: str | None = None) -> None:
        """Make the next `count` requests (for `repository` only, if given) fail; `mode` is "500" or "close"."""
        if mode not in ("500", "close"):
            raise ValueError(f"invalid failure mode {mode!r}: expected '500' or 'close'")
        with self._lock:
            self._failures.extend([(mode, repository)] * count)

    def requests(self) -> list[ReceivedRequest]:
        with self._lock:
            return list(self._requests)

    def requests_for(self, repository: str, path: str | None = None) -> list[ReceivedRequest]:
        return [
            r for r in self.requests()
            if r.payload.get("repository") == repository and (path is None or r.path == path)
        ]

    def wait_for(self, repository: str, count: int, server: Server, path: str | None = None,
                 timeout: float = DELIVERY_TIMEOUT) -> list[ReceivedRequest]:
        """Wait until `count` requests for `repository` arrived; fail after `timeout` seconds."""
        received = wait_until(lambda: len(self.requests_for(repository, path)) >= count, timeout)
        if not received:
            raise AssertionError(
                f"expected {count} webhook request(s) for {repository} within {timeout:.0f} s, "
                f"got {len(self.requests_for(repository, path))}\nserver log:\n{server.log()[-4000:]}"
            )
        return self.requests_for(repository, path)

    def _record(self, request: ReceivedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _failure_for(self, repository: str | None, attempt: str | None) -> str | None:
        with self._lock:
            for index, (mode, only) in enumerate(self._failures):
                if only is None or only == repository:
                    del self._failures[index]
                    return mode
            if self.failing or (self.fail_first_attempts and attempt == "1"):
                return "500"
            return None

    def _success_body(self) -> tuple[bytes, str]:
        if self.response_json is not None:
            return json.dumps(self.response_json).encode(), "application/json"
        return b"ok\n", "text/plain"

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                arrived = time.monotonic()
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                try:
                    repository = json.loads(body).get("repository")
                except ValueError:
                    repository = None
                failure = receiver._failure_for(repository, self.headers.get("X-Gitsrv-Delivery-Attempt"))
                if failure == "close":
                    receiver._record(ReceivedRequest(self.path, self.headers, body, None, arrived))
                    self.close_connection = True
                    return

                if failure == "500":
                    status, text, content_type = 500, b"failure requested by the test\n", "text/plain"
                else:
                    status = 200
                    text, content_type = receiver._success_body()
                receiver._record(ReceivedRequest(self.path, self.headers, body, status, arrived))
                if receiver.delay:
                    time.sleep(receiver.delay)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
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


class ServerPool:
    """Starts gitsrv servers with their own data folder, env and webhook targets; stops them all at the end."""

    def __init__(self, tmp_path_factory) -> None:
        self.tmp_path_factory = tmp_path_factory
        self.started: list[Server] = []

    def start(self, env: dict[str, str], *webhooks: list[str]) -> Server:
        """Start a server with `env`, after `gitsrv webhook add` with each argument list in `webhooks`."""
        data_dir = self.tmp_path_factory.mktemp("gitsrv") / "data"
        instance = Server(data_dir=data_dir, port=free_port(), env=dict(env))
        instance.cli("repo", "list")  # creates and migrates the database
        for arguments in webhooks:
            instance.cli("webhook", "add", *arguments)
        instance.start()
        self.started.append(instance)
        return instance

    def stop_all(self) -> None:
        """Stop every started server, all at once, and wait for them to exit."""
        stoppers = [threading.Thread(target=instance.stop) for instance in self.started]
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join(timeout=60)


def repo_name_for(request) -> str:
    """A repository name made from the test's name."""
    return re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")


def copy_repo(source: Server, target: Server, name: str) -> Path:
    """Copy `source`'s sample repository into `target` as repository `name`."""
    destination = target.repos_dir / f"{name}.git"
    shutil.copytree(source.repos_dir / "sample.git", destination)
    return destination


def clone(git, server, repo: str, token: str, dest: Path) -> Path:
    git.run("clone", "-q", server.url(repo, token), str(dest))
    return dest


def commit(git, work: Path, message: str) -> str:
    path = work / "change.txt"
    path.write_text((path.read_text() if path.exists() else "") + message + "\n")
    git.run("add", "change.txt", cwd=work)
    git.run("commit", "-q", "-m", message, cwd=work)
    return git.out("rev-parse", "HEAD", cwd=work)


def remote_lines(push_output: str) -> list[str]:
    """The `remote:` lines of git's output, without the padding git adds at their end."""
    return [line.rstrip() for line in push_output.splitlines() if line.startswith("remote: ")]


def event_id_from(push_output: str) -> str:
    match = EVENT_LINE.search(push_output)
    assert match, f"no 'CI ...: event <id>' line in the push output:\n{push_output}"
    return match.group(1)


def hmac_sha256(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def delivery_rows(server: Server, event_id: str, target_id: int = 1) -> tuple[str, list[tuple[int, int | None, str | None]]]:
    """Return the state of the event's delivery to `target_id` and its attempts as (number, status, error)."""
    database = Database(server.settings())
    try:
        with database.session() as session:
            delivery = session.scalars(
                select(Delivery).where(Delivery.event_id == event_id, Delivery.target_id == target_id)
            ).one()
            attempts = session.scalars(
                select(DeliveryAttempt).where(DeliveryAttempt.delivery_id == delivery.id).order_by(DeliveryAttempt.number)
            ).all()
            return delivery.state, [(a.number, a.status_code, a.error) for a in attempts]
    finally:
        database.dispose()


def events_of(server: Server, repository: str) -> list[tuple[str, str | None, list[int]]]:
    """Return the repository's events as (id, skip reason, target ids with a delivery), oldest first."""
    database = Database(server.settings())
    try:
        with database.session() as session:
            events = session.scalars(
                select(Event).where(Event.repository == repository).order_by(Event.created_at)
            ).all()
            return [(e.id, e.skip_reason, sorted(d.target_id for d in e.deliveries)) for e in events]
    finally:
        database.dispose()


def token_id(server: Server, name: str) -> int:
    database = Database(server.settings())
    try:
        with database.session() as session:
            return session.scalars(select(Token.id).where(Token.name == name)).one()
    finally:
        database.dispose()


@pytest.fixture(scope="module")
def receiver():
    instance = Receiver()
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory, receiver):
    """The module's gitsrv server, with fast retries, short commit lists and the receiver registered."""
    pool = ServerPool(tmp_path_factory)
    env = {"GITSRV_WEBHOOK_BACKOFF": "0.5", "GITSRV_WEBHOOK_MAX_COMMITS": str(MAX_COMMITS)}
    yield pool.start(env, ["--url", receiver.url, "--secret", WEBHOOK_SECRET])
    pool.stop_all()


@pytest.fixture
def repo(server, sample, request):
    """A fresh copy of the sample repository, named after the test."""
    name = repo_name_for(request)
    copy_sample(server, name)
    return name


def test_fast_forward_push_delivers_signed_event(git, server, receiver, repo, sample, tmp_path):
    token = server.token("source:read", "source:read-update", name="webhook-pusher")
    work = clone(git, server, repo, token, tmp_path / "w")
    new = commit(git, work, "fast-forward for CI")

    result = git.run("push", "origin", "main", cwd=work, check=False)

    assert result.returncode == 0, result.stderr
    event_id = event_id_from(result.stderr)
    assert remote_lines(result.stderr) == [f"remote: CI triggered: event {event_id} delivered to webhook target 1"]
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
    [ref] = payload["refs"]
    assert {key: ref[key] for key in ("ref", "before", "after", "classification")} == {
        "ref": "refs/heads/main", "before": sample["main"], "after": new, "classification": "update",
    }
    assert [c["id"] for c in ref["commits"]] == [new]
    assert ref["total_commits"] == 1
    assert payload["token"] == {"id": token_id(server, "webhook-pusher"), "name": "webhook-pusher"}
    assert payload["push_options"] == []
    sent_at = dt.datetime.strptime(payload["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)
    assert abs(dt.datetime.now(dt.timezone.utc) - sent_at) < dt.timedelta(minutes=1)


def test_push_options_passed_through(git, server, receiver, repo, tmp_path):
    work = clone(git, server, repo, server.token("source:read", "source:read-update"), tmp_path / "w")
    commit(git, work, "pushed with options")

    result = git.run("push", "-o", "deploy=staging", "-o", "foo=bar", "origin", "main", cwd=work, check=False)

    assert result.returncode == 0, result.stderr
    event_id = event_id_from(result.stderr)
    [request] = receiver.wait_for(repo, 1, server)
    assert request.payload["id"] == event_id
    assert request.payload["push_options"] == ["deploy=staging", "foo=bar"]


def test_rejected_push_delivers_nothing(git, server, receiver, repo, tmp_path):
    work = clone(git, server, repo, server.token("source:read"), tmp_path / "w")
    commit(git, work, "never accepted")
    git.run("remote", "set-url", "origin", server.url(repo, server.token("source:create")), cwd=work)

    result = git.run("push", "origin", "main", cwd=work, check=False)

    assert result.returncode != 0
    assert "(update requires scope source:read-update)" in result.stderr
    assert "CI " not in result.stderr
    assert events_of(server, repo) == []
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
    assert [(r["ref"], r["before"], r["after"], r["classification"]) for r in request.payload["refs"]] == [
        ("refs/heads/main", sample["main"], new, "update")
    ]


def test_push_of_2000_tags_is_one_event(git, server, receiver, repo, tmp_path):
    work = clone(git, server, repo, server.token("source:read"), tmp_path / "w")
    head = git.out("rev-parse", "HEAD", cwd=work)
    names = [f"refs/tags/bulk/t{number:04d}" for number in range(2000)]
    git.run("update-ref", "--stdin", cwd=work, input="".join(f"create {name} {head}\n" for name in names))
    git.run("remote", "set-url", "origin", server.url(repo, server.token("source:read", "source:create")), cwd=work)

    result = git.run("push", "origin", "--tags", cwd=work, check=False)

    assert result.returncode == 0, result.stderr[-2000:]
    event_id = event_id_from(result.stderr)
    [request] = receiver.wait_for(repo, 1, server)
    assert request.delivery == event_id
    refs = request.payload["refs"]
    assert len(refs) == 2000
    assert sorted(r["ref"] for r in refs) == names
    assert {(r["before"], r["after"], r["classification"]) for r in refs} == {(ZERO_ID, head, "create")}
    assert all("commits" not in r for r in refs)
    assert [event for event, _reason, _targets in events_of(server, repo)] == [event_id]


def test_update_lists_newest_commits_and_total(git, server, receiver, repo, sample, tmp_path):
    work = clone(git, server, repo, server.token("source:read", "source:read-update"), tmp_path / "w")
    new = [commit(git, work, f"commit {number} of 5\n\nbody line {number}") for number in range(1, 6)]

    result = git.run("push", "origin", "main", cwd=work, check=False)

    assert result.returncode == 0, result.stderr
    [request] = receiver.wait_for(repo, 1, server)
    [ref] = request.payload["refs"]
    assert ref["total_commits"] == 5
    assert len(ref["commits"]) == MAX_COMMITS
    assert [c["id"] for c in ref["commits"]] == new[::-1][:MAX_COMMITS]
    newest = ref["commits"][0]
    assert sorted(newest) == ["author", "committer", "id", "message", "timestamp"]
    assert newest["message"] == "commit 5 of 5\n\nbody line 5"
    assert newest["author"]["name"] == "Test Author"
    assert newest["author"]["email"] == "author@example.com"
    assert newest["committer"]["name"] == "Test Committer"
    assert newest["committer"]["email"] == "committer@example.com"
    committed_at = git.out("show", "-s", "--format=%cI", new[-1], cwd=work)
    assert newest["committer"]["date"] == committed_at
    assert newest["timestamp"] == committed_at
    assert newest["author"]["date"] == git.out("show", "-s", "--format=%aI", new[-1], cwd=work)


def test_created_branch_lists_only_new_commits(git, server, receiver, repo, sample, tmp_path):
    work = clone(git, server, repo, server.token("source:read", "source:create"), tmp_path / "w")
    git.run("checkout", "-q", "-b", "topic", "origin/feature", cwd=work)
    new = [commit(git, work, f"topic commit {number}") for number in (1, 2)]

    result = git.run("push", "origin", "topic", "origin/main:refs/heads/main-copy", cwd=work, check=False)

    assert result.returncode == 0, result.stderr
    [request] = receiver.wait_for(repo, 1, server)
    refs = {r["ref"]: r for r in request.payload["refs"]}
    topic = refs["refs/heads/topic"]
    assert topic["classification"] == "create"
    assert topic["before"] == ZERO_ID
    assert [c["id"] for c in topic["commits"]] == new[::-1]
    assert topic["total_commits"] == 2
    # A new branch at a commit that main already reaches brings no new commits.
    copy = refs["refs/heads/main-copy"]
    assert copy["commits"] == []
    assert copy["total_commits"] == 0


def test_tags_and_deletions_have_no_commits(git, server, receiver, repo, sample, tmp_path):
    token = server.token("source:read", "source:create", "source:delete")
    work = clone(git, server, repo, token, tmp_path / "w")
    git.run("tag", "-a", "-m", "Release 2.0", "v2.0", "origin/main", cwd=work)
    git.run("tag", "v2.0-light", "origin/main", cwd=work)

    result = git.run("push", "origin", "v2.0", "v2.0-light", ":feature", cwd=work, check=False)

    assert result.returncode == 0, result.stderr
    [request] = receiver.wait_for(repo, 1, server)
    refs = {r["ref"]: r for r in request.payload["refs"]}
    assert sorted(refs) == ["refs/heads/feature", "refs/tags/v2.0", "refs/tags/v2.0-light"]
    assert refs["refs/heads/feature"]["classification"] == "delete"
    assert refs["refs/heads/feature"]["after"] == ZERO_ID
    assert refs["refs/tags/v2.0-light"]["after"] == sample["main"]
    for name, ref in refs.items():
        assert "commits" not in ref, name
        assert "total_commits" not in ref, name


@pytest.mark.parametrize(
    ("message", "options", "reason"),
    [
        ("build this later [skip ci]", [], "[skip ci] in every new tip commit"),
        ("[CI SKIP] docs only", [], "[skip ci] in every new tip commit"),
        ("skipped by push option", ["-o", "ci.skip"], "push option ci.skip"),
    ],
    ids=["skip-ci", "ci-skip", "push-option"],
)
def test_skip_marker_records_without_delivery(git, server, receiver, repo, tmp_path, message, options, reason):
    work = clone(git, server, repo, server.token("source:read", "source:read-update"), tmp_path / "w")
    commit(git, work, message)

    result = git.run("push", *options, "origin", "main", cwd=work, check=False)

    assert result.returncode == 0, result.stderr
    event_id = event_id_from(result.stderr)
    assert remote_lines(result.stderr) == [
        f"remote: CI skipped: event {event_id} recorded but not delivered ({reason})"
    ]
    # A skipped event gets no delivery rows, so no worker can ever send it.
    assert events_of(server, repo) == [(event_id, reason, [])]
    assert receiver.requests_for(repo) == []


def test_skip_marker_on_one_of_two_refs_delivers(git, server, receiver, repo, tmp_path):
    work = clone(git, server, repo, server.token("source:read", "source:read-update", "source:create"), tmp_path / "w")
    git.run("checkout", "-q", "-b", "other", cwd=work)
    other = commit(git, work, "this one runs CI")
    git.run("checkout", "-q", "main", cwd=work)
    skipped = commit(git, work, "this one would not [skip ci]")

    result = git.run("push", "origin", "main", "other", cwd=work, check=False)

    assert result.returncode == 0, result.stderr
    event_id = event_id_from(result.stderr)
    assert "CI skipped" not in result.stderr
    [request] = receiver.wait_for(repo, 1, server)
    assert request.delivery == event_id
    assert {r["ref"]: r["after"] for r in request.payload["refs"]} == {
        "refs/heads/main": skipped, "refs/heads/other": other,
    }
    assert events_of(server, repo) == [(event_id, None, [1])]


def test_webhook_list_shows_target(server, receiver):
    result = server.cli("webhook", "list")

    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "STATE", "URL", "FILTERS", "FAILED", "REASON"]
    assert lines[1].split() == ["1", "enabled", receiver.url, "-", "0"]
    assert len(lines) == 2


def webhook_add(server: Server, *arguments: str) -> int:
    """Register a target on `server` and return its id."""
    result = server.cli("webhook", "add", "--secret", WEBHOOK_SECRET, *arguments)
    match = re.search(r"added webhook target (\d+):", result.stderr)
    assert match, result.stderr
    return int(match.group(1))


def test_ref_filter_selects_events(git, server, receiver, repo, tmp_path):
    release_path = "/hooks/release"
    target = webhook_add(server, "--url", receiver.url_at(release_path), "--ref", "refs/heads/release/*")
    try:
        work = clone(git, server, repo, server.token("source:read", "source:read-update", "source:create"), tmp_path / "w")
        commit(git, work, "on main")
        on_main = git.run("push", "origin", "main", cwd=work, check=False)
        git.run("checkout", "-q", "-b", "release/1", cwd=work)
        commit(git, work, "on release/1")
        on_release = git.run("push", "origin", "release/1", cwd=work, check=False)

        assert on_main.returncode == 0, on_main.stderr
        assert on_release.returncode == 0, on_release.stderr
        main_event = event_id_from(on_main.stderr)
        release_event = event_id_from(on_release.stderr)
        assert f"remote: CI triggered: event {release_event} delivered to webhook target {target}" in remote_lines(
            on_release.stderr
        )
        assert events_of(server, repo) == [(main_event, None, [1]), (release_event, None, [1, target])]
        [request] = receiver.wait_for(repo, 1, server, path=release_path)
        assert request.delivery == release_event
        assert [r.delivery for r in receiver.wait_for(repo, 2, server, path=WEBHOOK_PATH)] == [main_event, release_event]
    finally:
        server.cli("webhook", "remove", str(target))


def test_repo_filter_selects_events(git, server, receiver, sample, tmp_path):
    team_path = "/hooks/team"
    target = webhook_add(server, "--url", receiver.url_at(team_path), "--repo", "team/*")
    copy_sample(server, "team/filtered")
    copy_sample(server, "solo-filtered")
    try:
        token = server.token("source:read", "source:read-update")
        event_ids = {}
        for name in ("team/filtered", "solo-filtered"):
            work = clone(git, server, name, token, tmp_path / name.replace("/", "-"))
            commit(git, work, f"push to {name}")
            result = git.run("push", "origin", "main", cwd=work, check=False)
            assert result.returncode == 0, result.stderr
            event_ids[name] = event_id_from(result.stderr)

        assert events_of(server, "team/filtered") == [(event_ids["team/filtered"], None, [1, target])]
        assert events_of(server, "solo-filtered") == [(event_ids["solo-filtered"], None, [1])]
        [request] = receiver.wait_for("team/filtered", 1, server, path=team_path)
        assert request.delivery == event_ids["team/filtered"]
        assert receiver.requests_for("solo-filtered", path=team_path) == []
    finally:
        server.cli("webhook", "remove", str(target))


def test_link_local_target_rejected_at_delivery(git, server, receiver, repo, tmp_path):
    url = "http://169.254.169.254/latest"
    # Guard: delivery resolves the URL with this same check before it
    # connects, so the push below must never open a connection to it.
    with pytest.raises(TargetURLError, match="link-local"):
        resolve_target(url)
    database = Database(server.settings())
    try:
        with database.session() as session:
            # Stored directly, the way a target added before the address check would be.
            row = WebhookTarget(url=url, secret="s", repo_filters=json.dumps([repo]), ref_filters="[]")
            session.add(row)
            session.commit()
            target = row.id
    finally:
        database.dispose()
    try:
        work = clone(git, server, repo, server.token("source:read", "source:read-update"), tmp_path / "w")
        commit(git, work, "to a refused target")

        result = git.run("push", "origin", "main", cwd=work, check=False)

        assert result.returncode == 0, result.stderr
        event_id = event_id_from(result.stderr)
        rejections = [line for line in remote_lines(result.stderr) if f"webhook target {target} failed" in line]
        assert len(rejections) == 1, result.stderr
        assert re.search(UNSAFE_ADDRESS_ERROR, rejections[0]), rejections[0]
        assert "link-local" in rejections[0]
        records = json.loads(server.cli("webhook", "deliveries", "--target", str(target), "--json").stdout)
        assert records
        first = records[-1]
        assert first["attempt"] == 1
        assert first["status_code"] is None
        assert re.match(UNSAFE_ADDRESS_ERROR + re.escape(f" {url!r}"), first["error"]), first["error"]
        # Rejecting the address before connecting takes no network time.
        assert first["duration_ms"] < 100
        assert delivery_rows(server, event_id)[0] == "delivered"
    finally:
        server.cli("webhook", "remove", str(target))


@pytest.fixture
def offline_server(tmp_path):
    """A data folder that no server serves, for webhook commands that would add targets to the module's server."""
    return Server(data_dir=tmp_path / "data", port=free_port())


def stored_targets(server: Server) -> list[dict]:
    return json.loads(server.cli("webhook", "list", "--json").stdout)


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
    assert offline_server.cli("webhook", "list").stdout.split() == ["ID", "STATE", "URL", "FILTERS", "FAILED", "REASON"]


@pytest.mark.parametrize(
    ("url", "address", "reason"),
    [
        ("http://169.254.169.254/x", "169.254.169.254", "link-local"),
        ("http://[fe80::1]/", "fe80::1", "link-local"),
        ("http://0.0.0.0/", "0.0.0.0", "unspecified"),
    ],
)
def test_webhook_add_rejects_unsafe_address(offline_server, url, address, reason):
    result = offline_server.cli("webhook", "add", "--url", url, "--secret", "s", check=False)

    assert result.returncode == 2
    assert f"resolves to the {reason} address {address}" in result.stderr
    assert "--allow-unsafe-address" in result.stderr
    assert stored_targets(offline_server) == []


def test_webhook_add_allows_unsafe_address_when_asked(offline_server):
    # No server runs on this data folder, so nothing is ever sent to the address.
    result = offline_server.cli(
        "webhook", "add", "--url", "http://169.254.169.254/x", "--secret", "s", "--allow-unsafe-address"
    )

    assert "added webhook target 1: http://169.254.169.254/x" in result.stderr
    [target] = stored_targets(offline_server)
    assert target["allow_unsafe_address"] is True
    offline_server.cli("webhook", "remove", "1")
    assert stored_targets(offline_server) == []
