"""CI event delivery: retries, backoff, restarts, disabling, redelivery, the push
output, the CI API, and two servers on one PostgreSQL database.

Every server and receiver listens on 127.0.0.1. The receiver and the helpers
come from test_webhook.py.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections import Counter

import pytest

from tests.conftest import Server, copy_sample, free_port
from tests.test_webhook import (
    WEBHOOK_PATH,
    WEBHOOK_SECRET,
    Receiver,
    ServerPool,
    clone,
    commit,
    copy_repo,
    delivery_rows,
    event_id_from,
    events_of,
    hmac_sha256,
    remote_lines,
    repo_name_for,
    stored_targets,
    wait_until,
    webhook_add,
)

BACKOFF = 0.5
# urllib would otherwise send requests through a proxy named in the environment.
NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="module")
def receiver():
    instance = Receiver()
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    instances = ServerPool(tmp_path_factory)
    yield instances
    instances.stop_all()


@pytest.fixture(scope="module")
def server(pool, receiver):
    """The module's main gitsrv server: retries after 0.5 s, the receiver registered as target 1."""
    return pool.start({"GITSRV_WEBHOOK_BACKOFF": str(BACKOFF)}, ["--url", receiver.url, "--secret", WEBHOOK_SECRET])


@pytest.fixture
def repo(server, sample, request):
    """A fresh copy of the sample repository, named after the test."""
    name = repo_name_for(request)
    copy_sample(server, name)
    return name


def push_token(server: Server) -> str:
    """Create a token that may clone, update branches and create refs."""
    return server.token("source:read", "source:read-update", "source:create")


@pytest.mark.parametrize("failure", ["500", "close"])
def test_failed_attempt_is_retried(git, server, receiver, repo, tmp_path, failure):
    work = clone(git, server, repo, push_token(server), tmp_path / "w")
    commit(git, work, f"first attempt fails with {failure}")
    receiver.fail_next(1, failure, repository=repo)

    result = git.run("push", "origin", "main", cwd=work, check=False)

    assert result.returncode == 0, result.stderr
    event_id = event_id_from(result.stderr)
    [line] = remote_lines(result.stderr)
    assert line.startswith(f"remote: CI trigger queued: event {event_id} to webhook target 1 failed (")
    assert line.endswith(") and will be retried")
    first, second = receiver.wait_for(repo, 2, server)
    assert first.status == (500 if failure == "500" else None)
    assert second.status == 200
    assert first.delivery == event_id
    assert second.delivery == event_id
    assert first.attempt == 1
    assert second.attempt == 2
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


def test_pending_deliveries_survive_restart(git, server, receiver, repo, tmp_path):
    work = clone(git, server, repo, push_token(server), tmp_path / "w")
    event_ids = []
    receiver.stop()
    try:
        for number in range(3):
            commit(git, work, f"delivered after a restart, push {number}")
            result = git.run("push", "origin", "main", cwd=work, check=False)
            assert result.returncode == 0, result.stderr
            assert "will be retried" in result.stderr
            event_ids.append(event_id_from(result.stderr))
        # Every push made its first attempt, so the server stops with the deliveries still pending.
        server.stop()
    finally:
        receiver.start()

    before_restart = {event_id: delivery_rows(server, event_id) for event_id in event_ids}
    for event_id, (state, attempts) in before_restart.items():
        assert state == "pending", event_id
        assert attempts, event_id
        assert all(status is None and error.startswith("request failed:") for _n, status, error in attempts), attempts
    assert receiver.requests_for(repo) == []

    server.start()

    requests = receiver.wait_for(repo, 3, server)
    assert sorted(r.delivery for r in requests) == sorted(event_ids)
    for request in requests:
        assert request.status == 200
        assert request.attempt == len(before_restart[request.delivery][1]) + 1
    for event_id in event_ids:
        assert wait_until(lambda: delivery_rows(server, event_id)[0] == "delivered"), delivery_rows(server, event_id)


def test_backoff_doubles_between_attempts(git, server, receiver, repo, tmp_path):
    work = clone(git, server, repo, push_token(server), tmp_path / "w")
    commit(git, work, "fails three times")
    receiver.fail_next(3, repository=repo)

    result = git.run("push", "origin", "main", cwd=work, check=False)

    assert result.returncode == 0, result.stderr
    requests = receiver.wait_for(repo, 4, server)
    assert [r.attempt for r in requests] == [1, 2, 3, 4]
    assert [r.status for r in requests] == [500, 500, 500, 200]
    gaps = [later.received_at - earlier.received_at for earlier, later in zip(requests, requests[1:])]
    expected = [BACKOFF, BACKOFF * 2, BACKOFF * 4]
    # Each delay has ±20% jitter, and an idle worker notices a due retry at
    # its next poll (every second), so gaps can be longer but never shorter.
    for number, (gap, delay) in enumerate(zip(gaps, expected), start=1):
        assert gap >= 0.8 * delay, f"gap {number} was {gap:.2f} s, expected about {delay} s: {gaps}"
    assert gaps[2] > gaps[0], gaps


def test_redeliver_sends_next_attempt(git, server, receiver, repo, tmp_path):
    work = clone(git, server, repo, push_token(server), tmp_path / "w")
    commit(git, work, "delivered on the second attempt, then redelivered")
    receiver.fail_next(1, repository=repo)
    result = git.run("push", "origin", "main", cwd=work, check=False)
    assert result.returncode == 0, result.stderr
    event_id = event_id_from(result.stderr)
    receiver.wait_for(repo, 2, server)
    assert wait_until(lambda: delivery_rows(server, event_id)[0] == "delivered"), delivery_rows(server, event_id)

    redelivered = server.cli("webhook", "redeliver", event_id)

    assert f"queued event {event_id} for 1 webhook target(s)" in redelivered.stderr
    first, _second, third = receiver.wait_for(repo, 3, server)
    assert third.delivery == event_id
    assert third.attempt == 3
    assert third.status == 200
    assert third.body == first.body
    assert third.headers["X-Gitsrv-Signature-256"] == hmac_sha256(WEBHOOK_SECRET, third.body)
    assert wait_until(lambda: len(delivery_rows(server, event_id)[1]) == 3), delivery_rows(server, event_id)

    records = json.loads(server.cli("webhook", "deliveries", "--event", event_id, "--json").stdout)
    assert [r["attempt"] for r in records] == [3, 2, 1]
    assert [r["status_code"] for r in records] == [200, 200, 500]
    assert [r["error"] for r in records] == [None, None, "HTTP 500"]
    assert {(r["event_id"], r["target_id"], r["delivery_state"]) for r in records} == {(event_id, 1, "delivered")}
    assert all(isinstance(r["duration_ms"], int) for r in records)

    failed = json.loads(server.cli("webhook", "deliveries", "--event", event_id, "--failed", "--json").stdout)
    assert [(r["attempt"], r["error"]) for r in failed] == [(1, "HTTP 500")]
    every_failed = json.loads(server.cli("webhook", "deliveries", "--failed", "--json", "--limit", "500").stdout)
    assert every_failed
    assert all(r["error"] is not None for r in every_failed)

    table = server.cli("webhook", "deliveries", "--event", event_id, "--target", "1").stdout.splitlines()
    assert table[0].split() == ["TIME", "EVENT", "TARGET", "ATTEMPT", "RESULT", "MS", "DELIVERY"]
    assert [line.split()[4] for line in table[1:]] == ["3", "2", "1"]


def test_redeliver_unknown_event_fails(server):
    result = server.cli("webhook", "redeliver", "00000000-0000-0000-0000-000000000000", check=False)

    assert result.returncode == 1
    assert "no event with id 00000000-0000-0000-0000-000000000000" in result.stderr


# --- The remote: lines of the push output, with a 1 s budget for the first attempt.

CI_URL = "http://127.0.0.1/ci/1"
SLOW_RECEIVER_DELAY = 6.0


@pytest.fixture(scope="module")
def fast_receiver():
    instance = Receiver(response_json={"url": CI_URL})
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def slow_receiver():
    instance = Receiver(delay=SLOW_RECEIVER_DELAY)
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def inline_server(pool, server, sample, fast_receiver, slow_receiver):
    """A server that waits at most 1 s for first attempts: targets 1 fast, 2 slow, 3 a port with no listener."""
    dead_url = f"http://127.0.0.1:{free_port()}{WEBHOOK_PATH}"
    instance = pool.start(
        {"GITSRV_WEBHOOK_INLINE_BUDGET": "1", "GITSRV_WEBHOOK_BACKOFF": str(BACKOFF)},
        ["--url", fast_receiver.url, "--secret", WEBHOOK_SECRET, "--repo", "remote-fast"],
        ["--url", slow_receiver.url, "--secret", WEBHOOK_SECRET, "--repo", "remote-slow"],
        ["--url", dead_url, "--secret", WEBHOOK_SECRET, "--repo", "remote-dead"],
    )
    for name in ("remote-fast", "remote-slow", "remote-dead"):
        copy_repo(server, instance, name)
    return instance


def timed_push(git, server: Server, repo: str, tmp_path) -> tuple[str, float]:
    """Push one new commit to `repo`'s main; return git's stderr and the push's wall time in seconds."""
    work = clone(git, server, repo, push_token(server), tmp_path / "w")
    commit(git, work, f"push to {repo}")
    started = time.monotonic()
    result = git.run("push", "origin", "main", cwd=work, check=False)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    return result.stderr, elapsed


def test_fast_receiver_url_in_push_output(git, inline_server, fast_receiver, tmp_path):
    output, _elapsed = timed_push(git, inline_server, "remote-fast", tmp_path)

    assert remote_lines(output) == [f"remote: CI triggered: {CI_URL}"]
    [request] = fast_receiver.wait_for("remote-fast", 1, inline_server)
    assert request.status == 200
    assert delivery_rows(inline_server, request.delivery)[0] == "delivered"


def test_slow_receiver_does_not_hold_push(git, inline_server, slow_receiver, tmp_path):
    output, elapsed = timed_push(git, inline_server, "remote-slow", tmp_path)

    assert elapsed < 5, f"the push took {elapsed:.1f} s although the first attempt may take only 1 s"
    event_id = event_id_from(output)
    assert remote_lines(output) == [
        f"remote: CI trigger queued: event {event_id} is still being delivered to 1 webhook target(s) in the background"
    ]
    assert wait_until(
        lambda: delivery_rows(inline_server, event_id, target_id=2)[0] == "delivered",
        timeout=SLOW_RECEIVER_DELAY + 10,
    ), delivery_rows(inline_server, event_id, target_id=2)
    # The attempt still in flight holds its lease, so no poller sent the event a second time.
    [request] = slow_receiver.requests_for("remote-slow")
    assert request.delivery == event_id
    assert delivery_rows(inline_server, event_id, target_id=2)[1] == [(1, 200, None)]


def test_dead_receiver_push_queues_retry(git, inline_server, tmp_path):
    try:
        output, elapsed = timed_push(git, inline_server, "remote-dead", tmp_path)

        assert elapsed < 5, f"the push took {elapsed:.1f} s"
        event_id = event_id_from(output)
        [line] = remote_lines(output)
        assert re.fullmatch(
            rf"remote: CI trigger queued: event {event_id} to webhook target 3 failed "
            r"\(request failed: .*Connection refused.*\) and will be retried",
            line,
        ), line
        assert delivery_rows(inline_server, event_id, target_id=3)[0] == "pending"
    finally:
        # Stop the retries to the dead port.
        inline_server.cli("webhook", "remove", "3")


# --- Disabling a target after repeated given-up events, and enabling it again.


@pytest.fixture(scope="module")
def flaky_receiver():
    instance = Receiver()
    instance.start()
    yield instance
    instance.stop()


def test_target_disabled_after_failures_then_enabled(git, pool, server, sample, flaky_receiver, tmp_path):
    # With MAX_AGE 1 s and retries after 0.5 s, each event is given up at its second attempt.
    disabling = pool.start(
        {"GITSRV_WEBHOOK_BACKOFF": str(BACKOFF), "GITSRV_WEBHOOK_MAX_AGE": "1", "GITSRV_WEBHOOK_DISABLE_AFTER": "2"},
        ["--url", flaky_receiver.url, "--secret", WEBHOOK_SECRET],
    )
    copy_repo(server, disabling, "disabled")
    work = clone(git, disabling, "disabled", push_token(disabling), tmp_path / "w")
    flaky_receiver.failing = True
    given_up = []
    for number in (1, 2):
        commit(git, work, f"given up {number}")
        result = git.run("push", "origin", "main", cwd=work, check=False)
        assert result.returncode == 0, result.stderr
        given_up.append(event_id_from(result.stderr))

    assert wait_until(lambda: not stored_targets(disabling)[0]["enabled"]), disabling.log()[-4000:]
    [target] = stored_targets(disabling)
    assert target["consecutive_failures"] == 2
    assert target["disabled_reason"].startswith("2 events in a row were not delivered")
    assert "HTTP 500" in target["disabled_reason"]
    assert disabling.cli("webhook", "list").stdout.splitlines()[1].split()[1] == "disabled"
    for event_id in given_up:
        assert delivery_rows(disabling, event_id) == ("failed", [(1, 500, "HTTP 500"), (2, 500, "HTTP 500")])

    commit(git, work, "waits for the target")
    result = git.run("push", "origin", "main", cwd=work, check=False)
    assert result.returncode == 0, result.stderr
    waiting = event_id_from(result.stderr)
    assert remote_lines(result.stderr) == [f"remote: CI trigger queued: event {waiting} for 1 webhook target(s)"]
    sent_before = len(flaky_receiver.requests())
    # Idle workers poll once a second, so 1.5 s covers at least one poll of each.
    assert not wait_until(lambda: len(flaky_receiver.requests()) > sent_before, timeout=1.5)
    assert delivery_rows(disabling, waiting) == ("pending", [])

    flaky_receiver.failing = False
    enabled = disabling.cli("webhook", "enable", "1")

    assert "enabled webhook target 1; pending deliveries due now: 1" in enabled.stderr
    [request] = [r for r in flaky_receiver.wait_for("disabled", 5, disabling) if r.delivery == waiting]
    assert request.status == 200
    assert request.attempt == 1
    assert wait_until(lambda: delivery_rows(disabling, waiting)[0] == "delivered"), delivery_rows(disabling, waiting)
    assert stored_targets(disabling)[0]["enabled"] is True
    assert stored_targets(disabling)[0]["disabled_reason"] is None


@pytest.fixture(scope="module")
def slow_failing_receiver():
    instance = Receiver(delay=2.0)
    instance.failing = True
    instance.start()
    yield instance
    instance.stop()


def test_concurrent_given_up_events_all_count(git, pool, server, sample, slow_failing_receiver, tmp_path):
    # MAX_AGE 0 gives up every event at its first attempt, which both pushes
    # make at once while the receiver takes 2 s to fail them.
    counting = pool.start(
        {"GITSRV_WEBHOOK_MAX_AGE": "0", "GITSRV_WEBHOOK_DISABLE_AFTER": "2"},
        ["--url", slow_failing_receiver.url, "--secret", WEBHOOK_SECRET],
    )
    works = []
    for name in ("counted-1", "counted-2"):
        copy_repo(server, counting, name)
        work = clone(git, counting, name, push_token(counting), tmp_path / name)
        commit(git, work, f"given up in {name}")
        works.append(work)
    results = {}
    pushes = [
        threading.Thread(target=lambda work=work: results.__setitem__(work.name, git.run("push", "origin", "main", cwd=work)))
        for work in works
    ]
    for thread in pushes:
        thread.start()
    for thread in pushes:
        thread.join(timeout=30)
    assert sorted(results) == ["counted-1", "counted-2"]
    event_ids = [event_id_from(result.stderr) for result in results.values()]
    for result in results.values():
        assert "(HTTP 500) and is not retried" in result.stderr
    for event_id in event_ids:
        assert wait_until(lambda: delivery_rows(counting, event_id)[0] == "failed"), delivery_rows(counting, event_id)

    [target] = stored_targets(counting)

    assert target["consecutive_failures"] == 2
    assert target["enabled"] is False


# --- The CI API.


def api(server: Server, method: str, path: str, token: str | None = None, body: bytes | None = None,
        auth: str = "bearer") -> tuple[int, object]:
    """Send one API request; return the status and the parsed JSON body (or the text of a non-JSON body)."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token is not None and auth == "bearer":
        headers["Authorization"] = f"Bearer {token}"
    elif token is not None and auth == "osf":
        headers["OSF-TOKEN"] = token
    elif token is not None and auth == "basic":
        headers["Authorization"] = "Basic " + base64.b64encode(f"ci-user:{token}".encode()).decode()
    request = urllib.request.Request(server.base_url + path, data=body, method=method, headers=headers)
    try:
        with NO_PROXY_OPENER.open(request, timeout=10) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def trigger_body(ref: str = "refs/heads/main") -> bytes:
    return json.dumps({"ref": ref}).encode()


CI_REPO = "ci/api"
TRIGGER_PATH = f"/api/v1/repos/{CI_REPO}/ci/trigger"
EVENTS_PATH = f"/api/v1/repos/{CI_REPO}/ci/events"


@pytest.fixture(scope="module")
def ci_events(git, server, sample, receiver, tmp_path_factory) -> dict[str, str]:
    """Push to CI_REPO so it has a delivered, a skipped and a pending event.

    Returns the event ids by state, and under "main" the tip of main.

    The pending one went to refs/heads/waiting, which a disabled target also
    matches, so its delivery to that target stays pending.
    """
    copy_sample(server, CI_REPO)
    waiting = webhook_add(server, "--url", receiver.url_at("/hooks/waiting"), "--repo", CI_REPO,
                          "--ref", "refs/heads/waiting")
    server.cli("webhook", "disable", str(waiting))
    work = clone(git, server, CI_REPO, push_token(server), tmp_path_factory.mktemp("ci-events") / "w")
    events = {}
    for state, message, refspec in [
        ("delivered", "runs CI", "main"),
        ("skipped", "no CI [skip ci]", "main"),
        ("pending", "waits for a disabled target", "main:refs/heads/waiting"),
    ]:
        pushed = commit(git, work, message)
        result = git.run("push", "origin", refspec, cwd=work, check=False)
        assert result.returncode == 0, result.stderr
        events[state] = event_id_from(result.stderr)
        if refspec == "main":
            events["main"] = pushed
    receiver.wait_for(CI_REPO, 2, server)
    return events


def test_ci_trigger_delivers_trigger_event(server, receiver, ci_events):
    token = server.token("ci:read-update", "source:read")

    status, body = api(server, "POST", TRIGGER_PATH, token, trigger_body())

    assert status == 202, body
    assert body["ref"] == "refs/heads/main"
    assert body["after"] == ci_events["main"]
    assert body["targets"] == 1
    [request] = [r for r in receiver.wait_for(CI_REPO, 3, server) if r.headers["X-Gitsrv-Event"] == "trigger"]
    assert request.delivery == body["event_id"]
    assert request.headers["X-Gitsrv-Signature-256"] == hmac_sha256(WEBHOOK_SECRET, request.body)
    assert request.payload["event"] == "trigger"
    assert request.payload["ref"] == "refs/heads/main"
    assert request.payload["after"] == ci_events["main"]
    assert request.payload["repository"] == CI_REPO
    assert events_of(server, CI_REPO)[-1] == (body["event_id"], None, [1])


@pytest.mark.parametrize(
    ("scopes", "missing"),
    [(("source:read", "ci:read"), "ci:read-update"), (("ci:read-update",), "source:read")],
    ids=["without-ci-read-update", "without-source-read"],
)
def test_ci_trigger_requires_scopes(server, ci_events, scopes, missing):
    status, body = api(server, "POST", TRIGGER_PATH, server.token(*scopes), trigger_body())

    assert status == 403
    assert f"requires scope {missing}" in body["error"]


@pytest.mark.parametrize(
    ("path", "body", "status", "error"),
    [
        ("/api/v1/repos/no/such-repo/ci/trigger", trigger_body(), 404, "repository not found"),
        (TRIGGER_PATH, trigger_body("refs/heads/no-such-branch"), 404, "ref refs/heads/no-such-branch not found"),
        (TRIGGER_PATH, b'{"branch": "main"}', 400, "invalid request body"),
        (TRIGGER_PATH, b"not json", 400, "invalid request body"),
        (TRIGGER_PATH, b'{"ref": "main"}', 400, "invalid ref 'main': give the full ref name, for example refs/heads/main"),
    ],
    ids=["unknown-repo", "unknown-ref", "no-ref-field", "not-json", "short-ref"],
)
def test_ci_trigger_rejects_bad_request(server, ci_events, path, body, status, error):
    actual_status, response = api(server, "POST", path, server.token("ci:read-update", "source:read"), body)

    assert actual_status == status, response
    assert error in response["error"]


def test_ci_events_list_shows_states(server, ci_events):
    pushed = {ci_events[state]: state for state in ("delivered", "skipped", "pending")}

    status, body = api(server, "GET", EVENTS_PATH, server.token("ci:read", "source:read"))

    assert status == 200, body
    states = {event["id"]: event["state"] for event in body["events"] if event["id"] in pushed}
    assert states == pushed
    skipped = next(event for event in body["events"] if event["id"] == ci_events["skipped"])
    assert skipped["skip_reason"] == "[skip ci] in every new tip commit"
    assert skipped["deliveries"] == []
    pending = next(event for event in body["events"] if event["id"] == ci_events["pending"])
    assert sorted((d["target_id"], d["state"]) for d in pending["deliveries"]) == [(1, "delivered"), (2, "pending")]


def test_ci_events_require_ci_read(server, ci_events):
    event_path = f"/api/v1/ci/events/{ci_events['delivered']}"
    token = server.token("source:read")

    for path in (EVENTS_PATH, event_path):
        status, body = api(server, "GET", path, token)
        assert status == 403, path
        assert "requires scope ci:read" in body["error"], path
        assert api(server, "GET", path)[0] == 401, path


def test_ci_event_shows_attempt_log(server, ci_events):
    status, body = api(server, "GET", f"/api/v1/ci/events/{ci_events['delivered']}", server.token("ci:read", "source:read"))

    assert status == 200, body
    assert body["state"] == "delivered"
    assert body["payload"]["id"] == ci_events["delivered"]
    [delivery] = body["deliveries"]
    assert delivery["target_id"] == 1
    assert delivery["attempts"] == 1
    [attempt] = delivery["attempt_log"]
    assert attempt["attempt"] == 1
    assert attempt["status_code"] == 200
    assert attempt["error"] is None
    assert attempt["response_excerpt"] == "ok\n"
    assert isinstance(attempt["duration_ms"], int)


@pytest.mark.parametrize("auth", ["bearer", "osf", "basic"])
def test_ci_api_accepts_each_auth_form(server, ci_events, auth):
    token = server.token("ci:read-update", "source:read")

    list_status, _body = api(server, "GET", EVENTS_PATH, token, auth=auth)
    event_status, _body = api(server, "GET", f"/api/v1/ci/events/{ci_events['delivered']}", token, auth=auth)

    assert list_status == 200
    assert event_status == 200


# --- Two servers on one PostgreSQL database.


@pytest.fixture(scope="module")
def first_attempt_failing_receiver():
    instance = Receiver()
    instance.fail_first_attempts = True
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def shared_servers(postgres_url, tmp_path_factory, server, sample, first_attempt_failing_receiver):
    """Two `gitsrv serve` processes on one PostgreSQL database and one data folder, with one webhook target."""
    data_dir = tmp_path_factory.mktemp("shared") / "data"
    env = {"GITSRV_DATABASE_URL": postgres_url, "GITSRV_WEBHOOK_BACKOFF": str(BACKOFF)}
    servers = [Server(data_dir=data_dir, port=free_port(), env=dict(env)) for _ in range(2)]
    servers[0].cli("db", "upgrade")
    servers[0].cli("webhook", "add", "--url", first_attempt_failing_receiver.url, "--secret", WEBHOOK_SECRET)
    copy_repo(server, servers[0], "shared/ci")
    try:
        for instance in servers:
            instance.start()
        yield servers
    finally:
        for instance in servers:
            instance.stop()


def test_two_servers_send_each_attempt_once(git, shared_servers, first_attempt_failing_receiver, tmp_path):
    receiver = first_attempt_failing_receiver
    token = push_token(shared_servers[0])
    work = clone(git, shared_servers[0], "shared/ci", token, tmp_path / "w")
    event_ids = []
    for number in range(10):
        commit(git, work, f"shared push {number}")
        via = shared_servers[number % 2]
        result = git.run("push", via.url("shared/ci", token), "HEAD:main", cwd=work, check=False)
        assert result.returncode == 0, result.stderr
        event_ids.append(event_id_from(result.stderr))

    def delivered() -> set[str]:
        return {r.delivery for r in receiver.requests_for("shared/ci") if r.status == 200}

    assert wait_until(lambda: delivered() >= set(event_ids)), (
        f"{len(delivered())} of 10 events delivered\n{shared_servers[0].log()[-3000:]}\n{shared_servers[1].log()[-3000:]}"
    )
    # A second sender would have sent at the same time; wait past one more poll to see it.
    time.sleep(1.5)

    requests = receiver.requests_for("shared/ci")
    sent = Counter((r.delivery, r.attempt) for r in requests)
    assert {pair: count for pair, count in sent.items() if count != 1} == {}
    attempts_by_event = {event_id: sorted(a for d, a in sent if d == event_id) for event_id in event_ids}
    assert attempts_by_event == {event_id: [1, 2] for event_id in event_ids}
    for event_id in event_ids:
        assert delivery_rows(shared_servers[0], event_id) == ("delivered", [(1, 500, "HTTP 500"), (2, 200, None)])
    retries_by_server = [
        len(re.findall(r"webhook delivered: event=\S+ target=1 attempt=2", instance.log())) for instance in shared_servers
    ]
    assert sum(retries_by_server) == 10, retries_by_server
