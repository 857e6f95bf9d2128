"""The Microsoft Graph transport against pytest-httpx: no Entra ID or Graph endpoint is reachable here.

What is real: httpx (request building, form and JSON encoding, timeouts as request extensions),
cryptography (RSA keys, certificates, RS256 signatures). What is not: the answers. `FakeGraph`
answers `$batch` requests the way Graph's JSON batching is documented to (responses by id, in any
order; 424 Failed Dependency for a request whose `dependsOn` failed); its error documents and the
token endpoint's AADSTS errors are hand-written in Microsoft's documented shapes, not captured.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import hashlib
import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from jsonschema import Draft202012Validator
from pytest_httpx import HTTPXMock

from reconciler.errors import TransportError
from reconciler.model import TargetSpec
from reconciler.providers.base import Registry
from reconciler.transports.base import MASK, Command
from reconciler.transports.graph import GraphTransport, batch_url, retry_after, settings_from_connection
from reconciler.transports.graph_auth import ASSERTION_TYPE, cache_seconds, describe_token_error

TENANT = "contoso.onmicrosoft.com"
CLIENT = "11111111-2222-3333-4444-555555555555"
SECRET = "Xq8~s3cr3t.VALUE_never-shown+/="
TOKEN = "eyJ0eXAiOiJKV1Qi.TOKEN-never-shown-1.c2ln"
TOKEN2 = "eyJ0eXAiOiJKV1Qi.TOKEN-never-shown-2.c2ln"
TOKEN_URL = f"https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token"
BATCH_URL = "https://graph.microsoft.com/v1.0/$batch"
SKYPE = "00000004-0000-0ff1-ce00-000000000000"
SP = f"/servicePrincipals(appId='{SKYPE}')"
PERMISSION = "Application.ReadWrite.All"
AUTH_FAILED = "authentication failed: check the client id, tenant and credential"
NOT_FOUND = {"error": {"code": "Request_ResourceNotFound",
                       "message": f"Resource '{SKYPE}' does not exist or one of its queried reference-property "
                                  "objects are not present."}}
START = 1_700_000_000.0

Handler = Callable[[int, dict[str, Any]], tuple[int, Any, dict[str, str]]]


# --- fixtures ------------------------------------------------------------------------------------


class FakeClock:
    """Both clocks and the sleep of a transport: sleeping advances time, and is recorded."""

    def __init__(self) -> None:
        self.now = START
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def echo(_batch: int, item: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
    """Every request succeeds: a GET answers 200 with its URL, anything else 204."""
    if item["method"] == "GET":
        return 200, {"url": item["url"]}, {}
    return 204, None, {}


class FakeGraph:
    """A `$batch` endpoint. `outer` answers (status, json, headers) come first, one per request."""

    def __init__(self, handler: Handler = echo) -> None:
        self.handler = handler
        self.batches: list[list[dict[str, Any]]] = []
        self.outer: list[tuple[int, Any, dict[str, str]]] = []
        self.tokens: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.tokens.append(request.headers.get("authorization", ""))
        if self.outer:
            status, body, headers = self.outer.pop(0)
            return httpx.Response(status, json=body, headers=headers)
        items = json.loads(request.content)["requests"]
        self.batches.append(items)
        statuses: dict[str, int] = {}
        responses = []
        for item in items:
            if any(not 200 <= statuses[d] < 300 for d in item.get("dependsOn", [])):
                status, body, headers = 424, {"error": {"code": "FailedDependency",
                                                        "message": "Failed dependency"}}, {}
            else:
                status, body, headers = self.handler(len(self.batches), item)
            statuses[item["id"]] = status
            response: dict[str, Any] = {"id": item["id"], "status": status, "headers": headers}
            if body is not None:
                response["body"] = body
            responses.append(response)
        # Graph may answer in any order: answer backwards, so only matching by id gets it right.
        return httpx.Response(200, json={"responses": responses[::-1]})


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make(clock: FakeClock, tmp_path: Path) -> Iterator[Callable[..., GraphTransport]]:
    opened: list[GraphTransport] = []

    def build(environ: dict[str, str] | None = None, **connection: Any) -> GraphTransport:
        settings = settings_from_connection({"tenantId": TENANT, "clientId": CLIENT, **connection},
                                            target="tenant", base=tmp_path)
        transport = GraphTransport(
            settings, name="graph (tenant)",
            environ={"RECONCILE_GRAPH_CLIENT_SECRET": SECRET} if environ is None else environ,
            sleep=clock.sleep, clock=clock, wall_clock=clock)
        opened.append(transport)
        return transport

    yield build
    for transport in opened:
        transport.close()


def add_token(httpx_mock: HTTPXMock, token: str = TOKEN, expires_in: int = 3599, **kwargs: Any) -> None:
    httpx_mock.add_response(method="POST", url=TOKEN_URL, **kwargs,
                            json={"token_type": "Bearer", "expires_in": expires_in, "access_token": token})


def add_graph(httpx_mock: HTTPXMock, handler: Handler = echo) -> FakeGraph:
    graph = FakeGraph(handler)
    httpx_mock.add_callback(graph, method="POST", url=BATCH_URL, is_reusable=True)
    return graph


def get(path: str = SP, **query: str) -> Command:
    return Command("GET", {"path": path, **({"query": query} if query else {})})


def patch(path: str = SP, body: dict[str, Any] | None = None) -> Command:
    return Command("PATCH", {"path": path, "body": body if body is not None else {"accountEnabled": True}})


def form_of(request: httpx.Request) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(request.content.decode("ascii"), keep_blank_values=True).items()}


def token_requests(httpx_mock: HTTPXMock) -> list[httpx.Request]:
    return httpx_mock.get_requests(url=TOKEN_URL)


# --- batching --------------------------------------------------------------------------------------


def test_commands_go_in_batches_of_20_chained_by_depends_on(httpx_mock: HTTPXMock, make: Any) -> None:
    add_token(httpx_mock)
    graph = add_graph(httpx_mock)
    commands = [get(f"/servicePrincipals/{n}") for n in range(45)]
    transport = make()

    results = transport.invoke(commands)

    assert [len(batch) for batch in graph.batches] == [20, 20, 5]
    for batch in graph.batches:
        assert [item["id"] for item in batch] == [str(n) for n in range(1, len(batch) + 1)]
        assert "dependsOn" not in batch[0]
        assert [item["dependsOn"] for item in batch[1:]] == [[str(n)] for n in range(1, len(batch))]
    sent = [item["url"] for batch in graph.batches for item in batch]
    assert sent == [f"/servicePrincipals/{n}" for n in range(45)]
    # Answers came back in reverse order: each result is still its own command's.
    assert [r.command for r in results] == commands
    assert [r.output for r in results] == [({"url": f"/servicePrincipals/{n}"},) for n in range(45)]
    assert all(r.ok and r.error is None for r in results)
    assert transport.round_trips == 3


def test_batch_size_setting_splits_smaller(httpx_mock: HTTPXMock, make: Any) -> None:
    add_token(httpx_mock)
    graph = add_graph(httpx_mock)
    transport = make(batchSize=2)
    results = transport.invoke([get(f"/x/{n}") for n in range(5)])
    assert [len(b) for b in graph.batches] == [2, 2, 1]
    assert len(results) == 5 and transport.round_trips == 3


def test_request_shape_method_url_query_body_and_headers(httpx_mock: HTTPXMock, make: Any) -> None:
    add_token(httpx_mock)
    graph = add_graph(httpx_mock)
    body = {"servicePrincipalNames": [f"{SKYPE}/lync.contoso.com"], "accountEnabled": True}
    commands = [get(SP, **{"$select": "id,appId,keyCredentials"}), patch(SP, body),
                Command("DELETE", {"path": "/servicePrincipals/abc"}),
                Command("POST", {"path": "/servicePrincipals", "body": {"appId": SKYPE}})]

    results = make().invoke(commands)

    first, second, third, fourth = graph.batches[0]
    assert first == {"id": "1", "method": "GET", "url": f"{SP}?$select=id,appId,keyCredentials"}
    assert second == {"id": "2", "method": "PATCH", "url": SP, "dependsOn": ["1"],
                      "headers": {"Content-Type": "application/json"}, "body": body}
    assert third == {"id": "3", "method": "DELETE", "url": "/servicePrincipals/abc", "dependsOn": ["2"]}
    assert fourth["method"] == "POST" and fourth["body"] == {"appId": SKYPE}
    assert [r.output for r in results] == [({"url": first["url"]},), (), (), ()]
    batch = httpx_mock.get_request(url=BATCH_URL)
    assert batch is not None
    assert batch.headers["authorization"] == f"Bearer {TOKEN}"
    assert batch.headers["content-type"] == "application/json"


def test_query_values_are_url_encoded() -> None:
    command = get("/servicePrincipals", **{"$filter": "appId eq '00000004-x'", "$select": "id"})
    assert batch_url(command) == "/servicePrincipals?$filter=appId%20eq%20'00000004-x'&$select=id"


def test_stop_on_error_stops_at_the_first_failure_and_424_means_not_run(httpx_mock: HTTPXMock, make: Any) -> None:
    add_token(httpx_mock)

    def handler(_batch: int, item: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        return (404, NOT_FOUND, {}) if item["id"] == "3" else echo(_batch, item)

    graph = add_graph(httpx_mock, handler)
    commands = [get("/a"), get("/b"), patch(SP), get("/d"), get("/e"), *[get(f"/more/{n}") for n in range(20)]]
    transport = make()

    results = transport.invoke(commands)

    # Graph answered 424 for /d and /e (their dependency failed): those did not run and get no result.
    assert [item["id"] for item in graph.batches[0]] == [str(n) for n in range(1, 21)]
    assert len(results) == 3
    assert [r.ok for r in results] == [True, True, False]
    assert results[2].error == (f"PATCH {SP}: 404 Request_ResourceNotFound: Resource '{SKYPE}' does not exist or "
                                "one of its queried reference-property objects are not present.")
    assert transport.round_trips == 1  # the second batch was never sent
    assert len(graph.batches) == 1


def test_without_stop_on_error_no_depends_on_and_every_command_answers(httpx_mock: HTTPXMock, make: Any) -> None:
    add_token(httpx_mock)

    def handler(_batch: int, item: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        return (404, NOT_FOUND, {}) if item["url"] == "/b" else echo(_batch, item)

    graph = add_graph(httpx_mock, handler)
    results = make().invoke([get("/a"), get("/b"), get("/c")], stop_on_error=False)
    assert all("dependsOn" not in item for item in graph.batches[0])
    assert [r.ok for r in results] == [True, False, True]
    assert results[1].error is not None and results[1].error.startswith("GET /b: 404 Request_ResourceNotFound: ")
    assert results[2].output == ({"url": "/c"},)


def test_a_424_without_an_earlier_failure_is_reported_as_not_run(httpx_mock: HTTPXMock, make: Any) -> None:
    add_token(httpx_mock)
    add_graph(httpx_mock, lambda _b, item: (424, None, {}))
    results = make().invoke([get("/a")], stop_on_error=False)
    assert results[0].error == "GET /a: 424 Failed Dependency: not run, because a request it depends on failed"


def test_refused_commands_are_never_sent(httpx_mock: HTTPXMock, make: Any) -> None:
    transport = make()
    bad = [Command("PUT", {"path": "/x"}), Command("GET", {"path": "https://evil.example/x"}),
           Command("GET", {"path": "/x?$select=id"}), Command("GET", {"path": "/x", "body": {}}),
           Command("GET", {"path": "/x", "verb": "y"}), Command("PATCH", {"path": "/x", "body": {"n": float("nan")}})]
    for command in bad:
        [result] = transport.invoke([command])
        assert not result.ok and result.error is not None
        assert "refused by the graph transport" in result.error and "nothing was sent" in result.error
    assert httpx_mock.get_requests() == []


def test_a_refused_command_with_stop_on_error_sends_only_what_comes_before(httpx_mock: HTTPXMock,
                                                                           make: Any) -> None:
    add_token(httpx_mock)
    graph = add_graph(httpx_mock)
    transport = make()
    results = transport.invoke([get("/a"), Command("PUT", {"path": "/x"}), get("/c")])
    assert [item["url"] for item in graph.batches[0]] == ["/a"]
    assert [r.ok for r in results] == [True, False]

    results = transport.invoke([get("/a"), Command("PUT", {"path": "/x"}), get("/c")], stop_on_error=False)
    assert [item["url"] for item in graph.batches[1]] == ["/a", "/c"]
    assert [r.ok for r in results] == [True, False, True]
    assert [r.command.parameters["path"] for r in results] == ["/a", "/x", "/c"]


def test_no_commands_no_request(httpx_mock: HTTPXMock, make: Any) -> None:
    assert make().invoke([]) == []
    assert httpx_mock.get_requests() == []


def test_a_batch_answer_missing_a_response_is_a_transport_error(httpx_mock: HTTPXMock, make: Any) -> None:
    add_token(httpx_mock)
    httpx_mock.add_response(method="POST", url=BATCH_URL, json={"responses": [{"id": "1", "status": 200}]})
    with pytest.raises(TransportError, match=r"no response for request id\(s\) 2"):
        make().invoke([get("/a"), get("/b")])


def test_a_failed_later_batch_says_earlier_commands_ran(httpx_mock: HTTPXMock, make: Any) -> None:
    add_token(httpx_mock)
    graph = add_graph(httpx_mock)
    graph.outer = [(200, {"responses": [{"id": "1", "status": 204}]}, {}),
                   (400, {"error": {"code": "BadRequest", "message": "Invalid batch payload."}}, {})]
    with pytest.raises(TransportError) as caught:
        make(batchSize=1).invoke([patch("/a"), patch("/b")])
    assert "400 BadRequest: Invalid batch payload." in str(caught.value)
    assert "the 1 command(s) before this batch had already run" in str(caught.value)


# --- retries -----------------------------------------------------------------------------------------


def test_429_honours_retry_after_seconds_then_succeeds(httpx_mock: HTTPXMock, make: Any, clock: FakeClock) -> None:
    add_token(httpx_mock)
    graph = add_graph(httpx_mock)
    graph.outer = [(429, {"error": {"code": "TooManyRequests", "message": "Too many requests"}},
                    {"Retry-After": "7"})]
    transport = make()
    results = transport.invoke([get("/a")])
    assert clock.sleeps == [7.0]
    assert results[0].ok and transport.round_trips == 2
    assert len(graph.batches) == 1


def test_retry_after_as_an_http_date(httpx_mock: HTTPXMock, make: Any, clock: FakeClock) -> None:
    add_token(httpx_mock)
    graph = add_graph(httpx_mock)
    when = email.utils.format_datetime(dt.datetime.fromtimestamp(START + 12, dt.UTC), usegmt=True)
    graph.outer = [(503, None, {"Retry-After": when})]
    make().invoke([get("/a")])
    assert clock.sleeps == [12.0]


def test_retry_after_parsing() -> None:
    assert retry_after({"retry-after": "3"}, START) == 3.0
    assert retry_after({"Retry-After": 2}, START) == 2.0
    assert retry_after({"Retry-After": "soon"}, START) is None
    assert retry_after({"Retry-After": "-1"}, START) is None
    assert retry_after({}, START) is None
    past = email.utils.format_datetime(dt.datetime.fromtimestamp(START - 60, dt.UTC), usegmt=True)
    assert retry_after(httpx.Headers({"Retry-After": past}), START) == 0.0


def test_503_backs_off_exponentially(httpx_mock: HTTPXMock, make: Any, clock: FakeClock) -> None:
    add_token(httpx_mock)
    graph = add_graph(httpx_mock)
    graph.outer = [(503, None, {})] * 3
    transport = make()
    assert transport.invoke([get("/a")])[0].ok
    assert clock.sleeps == [1.0, 2.0, 4.0]
    assert transport.round_trips == 4


def test_backoff_is_capped_at_30_seconds_per_wait(httpx_mock: HTTPXMock, make: Any, clock: FakeClock) -> None:
    add_token(httpx_mock)
    graph = add_graph(httpx_mock)
    graph.outer = [(503, None, {})] * 8
    make(maxRetrySeconds=500).invoke([get("/a")])
    assert clock.sleeps == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_total_retry_time_is_bounded(httpx_mock: HTTPXMock, make: Any, clock: FakeClock) -> None:
    add_token(httpx_mock)
    graph = add_graph(httpx_mock)
    graph.outer = [(503, {"error": {"code": "ServiceUnavailable", "message": "busy"}}, {})] * 10
    with pytest.raises(TransportError) as caught:
        make(maxRetrySeconds=10).invoke([get("/a")])
    # 1 + 2 + 4 = 7 s waited; the next wait (8 s) would end past 10 s.
    assert clock.sleeps == [1.0, 2.0, 4.0]
    message = str(caught.value)
    assert message.startswith(f"graph (tenant): POST {BATCH_URL}: still 503 Service Unavailable (ServiceUnavailable)")
    assert "gave up after retrying for 7 s (connection.maxRetrySeconds is 10)" in message
    assert graph.batches == []
    graph.outer.clear()


def test_a_retry_after_beyond_the_budget_is_not_waited(httpx_mock: HTTPXMock, make: Any, clock: FakeClock) -> None:
    add_token(httpx_mock)
    graph = add_graph(httpx_mock)
    graph.outer = [(429, None, {"Retry-After": "300"})]
    with pytest.raises(TransportError, match=r"still 429 Too Many Requests; gave up after retrying for 0 s"):
        make().invoke([get("/a")])
    assert clock.sleeps == []


def test_inner_429_resends_only_the_tail(httpx_mock: HTTPXMock, make: Any, clock: FakeClock) -> None:
    add_token(httpx_mock)

    def handler(batch: int, item: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        if batch == 1 and item["url"] == "/c":
            return 429, {"error": {"code": "TooManyRequests", "message": "slow down"}}, {"Retry-After": "3"}
        return echo(batch, item)

    graph = add_graph(httpx_mock, handler)
    transport = make()
    results = transport.invoke([get("/a"), get("/b"), get("/c"), get("/d"), get("/e")])

    assert clock.sleeps == [3.0]
    assert [item["url"] for item in graph.batches[1]] == ["/c", "/d", "/e"]
    assert [item.get("dependsOn") for item in graph.batches[1]] == [None, ["1"], ["2"]]
    assert [r.output for r in results] == [({"url": p},) for p in ("/a", "/b", "/c", "/d", "/e")]
    assert transport.round_trips == 2


def test_inner_503_without_stop_on_error_resends_only_itself(httpx_mock: HTTPXMock, make: Any,
                                                             clock: FakeClock) -> None:
    add_token(httpx_mock)

    def handler(batch: int, item: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        return (503, None, {}) if batch == 1 and item["url"] == "/b" else echo(batch, item)

    graph = add_graph(httpx_mock, handler)
    results = make().invoke([get("/a"), get("/b"), get("/c")], stop_on_error=False)
    assert [item["url"] for item in graph.batches[1]] == ["/b"]
    assert clock.sleeps == [1.0]
    assert [r.output for r in results] == [({"url": p},) for p in ("/a", "/b", "/c")]


def test_inner_429_past_the_budget_is_an_error_result(httpx_mock: HTTPXMock, make: Any, clock: FakeClock) -> None:
    add_token(httpx_mock)

    def handler(batch: int, item: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        if item["url"] == "/b":
            return 429, {"error": {"code": "TooManyRequests", "message": "slow down"}}, {"Retry-After": "4"}
        return echo(batch, item)

    graph = add_graph(httpx_mock, handler)
    results = make(maxRetrySeconds=10).invoke([get("/a"), get("/b"), get("/c")])
    assert clock.sleeps == [4.0, 4.0]
    assert len(graph.batches) == 3
    assert [r.ok for r in results] == [True, False]
    assert results[1].error == ("GET /b: 429 TooManyRequests: slow down "
                                "(gave up after retrying for 8 s (connection.maxRetrySeconds is 10))")


def test_connection_errors_are_retried(httpx_mock: HTTPXMock, make: Any, clock: FakeClock) -> None:
    add_token(httpx_mock)
    httpx_mock.add_exception(httpx.ConnectError("Connection refused"), url=BATCH_URL)
    add_graph(httpx_mock)
    assert make().invoke([get("/a")])[0].ok
    assert clock.sleeps == [1.0]


def test_connection_errors_until_the_budget_is_spent(httpx_mock: HTTPXMock, make: Any, clock: FakeClock) -> None:
    add_token(httpx_mock)
    httpx_mock.add_exception(httpx.ConnectError("[Errno 111] Connection refused"), url=BATCH_URL, is_reusable=True)
    transport = make(maxRetrySeconds=5)
    with pytest.raises(TransportError) as caught:
        transport.invoke([get("/a")])
    assert clock.sleeps == [1.0, 2.0]
    assert str(caught.value) == (f"graph (tenant): POST {BATCH_URL}: cannot connect (ConnectError: [Errno 111] "
                                 "Connection refused); gave up after retrying for 3 s "
                                 "(connection.maxRetrySeconds is 5)")
    assert len(httpx_mock.get_requests(url=BATCH_URL)) == 3
    assert transport.round_trips == 0


def test_timeouts_are_retried_and_named(httpx_mock: HTTPXMock, make: Any, clock: FakeClock) -> None:
    add_token(httpx_mock)
    httpx_mock.add_exception(httpx.ReadTimeout("The read operation timed out"), url=BATCH_URL, is_reusable=True)
    with pytest.raises(TransportError, match=r"no answer within 12.5 s \(ReadTimeout\); gave up"):
        make(maxRetrySeconds=0, timeoutSeconds=12.5).invoke([get("/a")])
    assert clock.sleeps == []


def test_the_token_request_is_retried_too(httpx_mock: HTTPXMock, make: Any, clock: FakeClock) -> None:
    httpx_mock.add_response(method="POST", url=TOKEN_URL, status_code=429, headers={"Retry-After": "2"})
    add_token(httpx_mock)
    add_graph(httpx_mock)
    assert make().invoke([get("/a")])[0].ok
    assert clock.sleeps == [2.0]


def test_every_request_carries_the_timeout(httpx_mock: HTTPXMock, make: Any) -> None:
    add_token(httpx_mock)
    graph = add_graph(httpx_mock)
    graph.outer = [(503, None, {})]
    make(timeoutSeconds=12.5).invoke([get("/a")])
    requests = httpx_mock.get_requests()
    assert len(requests) == 3  # token, throttled batch, batch
    for request in requests:
        assert request.extensions["timeout"] == {"connect": 12.5, "read": 12.5, "write": 12.5, "pool": 12.5}


# --- tokens ------------------------------------------------------------------------------------------


def test_client_credentials_form_with_a_secret_from_the_environment(httpx_mock: HTTPXMock, make: Any) -> None:
    add_token(httpx_mock)
    add_graph(httpx_mock)
    make().invoke([get("/a")])
    [request] = token_requests(httpx_mock)
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert form_of(request) == {"client_id": CLIENT, "scope": "https://graph.microsoft.com/.default",
                                "grant_type": "client_credentials", "client_secret": SECRET}


def test_a_named_environment_variable_authority_and_graph_url(httpx_mock: HTTPXMock, make: Any) -> None:
    httpx_mock.add_response(method="POST", url=f"https://login.microsoftonline.us/{TENANT}/oauth2/v2.0/token",
                            json={"token_type": "Bearer", "expires_in": 3599, "access_token": TOKEN})
    graph = FakeGraph()
    httpx_mock.add_callback(graph, url="https://graph.microsoft.us/v1.0/$batch")
    transport = make(environ={"MY_SECRET": "other-secret"}, clientSecretEnv="MY_SECRET",
                     authority="https://login.microsoftonline.us/", graphUrl="https://graph.microsoft.us")
    transport.invoke([get("/a")])
    form = form_of(httpx_mock.get_requests()[0])
    assert form["client_secret"] == "other-secret"
    assert form["scope"] == "https://graph.microsoft.us/.default"


def test_no_credential_is_an_error_naming_the_options(httpx_mock: HTTPXMock, make: Any) -> None:
    with pytest.raises(TransportError) as caught:
        make(environ={}).invoke([get("/a")])
    message = str(caught.value)
    for option in ("RECONCILE_GRAPH_CLIENT_SECRET", "clientSecretEnv", "clientSecretFile", "certificateKeyFile",
                   "certificateFile"):
        assert option in message
    assert httpx_mock.get_requests() == []
    with pytest.raises(TransportError, match=r"environment variable MINE .* is not set"):
        make(environ={}, clientSecretEnv="MINE").invoke([get("/a")])


def test_client_secret_from_a_private_file(httpx_mock: HTTPXMock, make: Any, tmp_path: Path) -> None:
    path = tmp_path / "secret.txt"
    path.write_text(SECRET + "\n", encoding="utf-8")
    path.chmod(0o600)
    add_token(httpx_mock)
    add_graph(httpx_mock)
    make(environ={}, clientSecretFile="secret.txt").invoke([get("/a")])
    assert form_of(token_requests(httpx_mock)[0])["client_secret"] == SECRET


@pytest.mark.skipif(os.name == "nt", reason="POSIX file modes")
def test_a_client_secret_file_others_can_read_is_refused(httpx_mock: HTTPXMock, make: Any, tmp_path: Path) -> None:
    path = tmp_path / "secret.txt"
    path.write_text(SECRET, encoding="utf-8")
    path.chmod(0o644)
    with pytest.raises(TransportError, match=r"readable or writable by group or others \(mode 0644\).*chmod 600"):
        make(environ={}, clientSecretFile="secret.txt").invoke([get("/a")])
    assert httpx_mock.get_requests() == []


def test_the_token_is_cached_across_invokes_until_near_expiry(httpx_mock: HTTPXMock, make: Any,
                                                              clock: FakeClock) -> None:
    add_token(httpx_mock, TOKEN)
    graph = add_graph(httpx_mock)
    transport = make()
    transport.invoke([get("/a")])
    clock.now += 3599 - 300 - 1
    transport.invoke([get("/b")])
    assert len(token_requests(httpx_mock)) == 1
    add_token(httpx_mock, TOKEN2)
    clock.now += 2  # now within 5 minutes of expiry
    transport.invoke([get("/c")])
    assert len(token_requests(httpx_mock)) == 2
    assert transport.tokens.requests == 2
    assert graph.tokens == [f"Bearer {TOKEN}", f"Bearer {TOKEN}", f"Bearer {TOKEN2}"]


def test_cache_lifetime() -> None:
    assert cache_seconds(3599) == 3299
    assert cache_seconds("3599") == 3299
    assert cache_seconds(200) == 60  # 5 minutes early would be never: 60 s
    assert cache_seconds(30) == 30  # but never past the token's own expiry
    assert cache_seconds(None) == 60
    assert cache_seconds(0) == 0


def test_an_expired_token_mid_run_is_renewed_once(httpx_mock: HTTPXMock, make: Any) -> None:
    add_token(httpx_mock, TOKEN)
    add_token(httpx_mock, TOKEN2)
    graph = add_graph(httpx_mock)
    graph.outer = [(401, {"error": {"code": "InvalidAuthenticationToken",
                                    "message": "Lifetime validation failed, the token is expired."}}, {})]
    transport = make()
    assert transport.invoke([get("/a")])[0].ok
    assert graph.tokens == [f"Bearer {TOKEN}", f"Bearer {TOKEN2}"]
    assert len(token_requests(httpx_mock)) == 2


def test_a_second_401_is_an_authentication_error(httpx_mock: HTTPXMock, make: Any) -> None:
    add_token(httpx_mock, TOKEN)
    add_token(httpx_mock, TOKEN2)
    graph = add_graph(httpx_mock)
    expired = (401, {"error": {"code": "InvalidAuthenticationToken", "message": "Access token validation failure."}},
               {})
    graph.outer = [expired, expired]
    with pytest.raises(TransportError) as caught:
        make().invoke([get("/a")])
    message = str(caught.value)
    assert f"POST {BATCH_URL}: 401 InvalidAuthenticationToken: Access token validation failure." in message
    assert AUTH_FAILED in message and PERMISSION in message
    assert len(token_requests(httpx_mock)) == 2
    assert len(graph.tokens) == 2


def test_403_names_the_permission(httpx_mock: HTTPXMock, make: Any) -> None:
    add_token(httpx_mock)
    denied = {"error": {"code": "Authorization_RequestDenied", "message": "Insufficient privileges to complete the "
                                                                          "operation."}}
    add_graph(httpx_mock, lambda _b, _i: (403, denied, {}))
    [result] = make().invoke([patch(SP)])
    assert result.error == (f"PATCH {SP}: 403 Authorization_RequestDenied: Insufficient privileges to complete the "
                            "operation. (the app needs the Microsoft Graph application permission "
                            "Application.ReadWrite.All, admin-consented)")


def test_an_outer_403_names_the_permission(httpx_mock: HTTPXMock, make: Any) -> None:
    add_token(httpx_mock)
    httpx_mock.add_response(method="POST", url=BATCH_URL, status_code=403,
                            json={"error": {"code": "Authorization_RequestDenied", "message": "Insufficient"}})
    with pytest.raises(TransportError, match=f"403 Authorization_RequestDenied: Insufficient .*{PERMISSION}"):
        make().invoke([get("/a")])


def test_an_inner_401_names_authentication_and_the_permission(httpx_mock: HTTPXMock, make: Any) -> None:
    add_token(httpx_mock)
    add_graph(httpx_mock, lambda _b, _i: (401, {"error": {"code": "Unauthorized", "message": "Nope."}}, {}))
    [result] = make().invoke([get("/a")])
    assert result.error is not None
    assert result.error.startswith(f"GET /a: 401 Unauthorized: Nope.: {AUTH_FAILED}")
    assert PERMISSION in result.error


AADSTS_INVALID_SECRET = {
    "error": "invalid_client",
    "error_description": "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the "
                         "request is the client secret value, not the client secret ID, for a secret added to app "
                         f"'{CLIENT}'.\r\nTrace ID: 0b9f-trace\r\nCorrelation ID: 7c1e-corr\r\nTimestamp: "
                         "2025-01-01 00:00:00Z",
    "error_codes": [7000215],
    "correlation_id": "7c1e-corr",
}


def test_token_endpoint_errors_name_the_aadsts_code(httpx_mock: HTTPXMock, make: Any) -> None:
    httpx_mock.add_response(method="POST", url=TOKEN_URL, status_code=401, json=AADSTS_INVALID_SECRET)
    with pytest.raises(TransportError) as caught:
        make().invoke([get("/a")])
    message = str(caught.value)
    assert message.startswith(f"graph (tenant): cannot get a token for client {CLIENT} from {TOKEN_URL}: "
                              "401 AADSTS7000215: Invalid client secret provided.")
    assert "Trace ID" not in message and "[correlation id 7c1e-corr]" in message
    assert "check the client id, tenant and credential" in message
    assert httpx_mock.get_requests(url=BATCH_URL) == []


def test_describe_token_error_without_aadsts_prefix() -> None:
    assert describe_token_error({"error": "invalid_scope", "error_description": "bad scope"}) == \
        "invalid_scope: bad scope"
    assert describe_token_error({"error": "unauthorized_client"}) == "unauthorized_client"


def test_a_token_answer_without_a_token_is_an_error(httpx_mock: HTTPXMock, make: Any) -> None:
    httpx_mock.add_response(method="POST", url=TOKEN_URL, json={"token_type": "Bearer"})
    with pytest.raises(TransportError, match="the answer has no access_token"):
        make().invoke([get("/a")])


# --- certificate assertion ---------------------------------------------------------------------------


def b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


@pytest.fixture(scope="module")
def certificate() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "reconciler-graph")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=365)).sign(key, hashes.SHA256()))
    return key, cert


def write_key_pair(tmp_path: Path, key: rsa.RSAPrivateKey, cert: x509.Certificate, *, der: bool = False,
                   mode: int = 0o600) -> tuple[str, str]:
    key_path = tmp_path / "app.key"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(mode)
    cert_path = tmp_path / ("app.cer" if der else "app.pem")
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER if der else serialization.Encoding.PEM))
    return key_path.name, cert_path.name


@pytest.mark.parametrize("der", [False, True], ids=["pem-cert", "der-cert"])
def test_certificate_assertion_is_a_signed_jwt(httpx_mock: HTTPXMock, make: Any, tmp_path: Path, clock: FakeClock,
                                               certificate: tuple[rsa.RSAPrivateKey, x509.Certificate],
                                               der: bool) -> None:
    key, cert = certificate
    key_file, cert_file = write_key_pair(tmp_path, key, cert, der=der)
    add_token(httpx_mock)
    add_graph(httpx_mock)
    # A secret in the environment is not used when the connection names a certificate.
    transport = make(certificateKeyFile=key_file, certificateFile=cert_file)
    transport.invoke([get("/a")])

    form = form_of(token_requests(httpx_mock)[0])
    assert "client_secret" not in form
    assert form["client_assertion_type"] == ASSERTION_TYPE == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    assert form["client_id"] == CLIENT and form["grant_type"] == "client_credentials"
    header_b64, claims_b64, signature_b64 = form["client_assertion"].split(".")
    key.public_key().verify(b64decode(signature_b64), f"{header_b64}.{claims_b64}".encode("ascii"),
                            padding.PKCS1v15(), hashes.SHA256())  # raises InvalidSignature if wrong
    cert_der = cert.public_bytes(serialization.Encoding.DER)
    header = json.loads(b64decode(header_b64))
    assert header == {
        "alg": "RS256", "typ": "JWT",
        "x5t#S256": base64.urlsafe_b64encode(hashlib.sha256(cert_der).digest()).rstrip(b"=").decode(),
        "x5t": base64.urlsafe_b64encode(hashlib.sha1(cert_der).digest()).rstrip(b"=").decode(),
    }
    claims = json.loads(b64decode(claims_b64))
    assert uuid.UUID(claims.pop("jti")).version == 4
    assert claims == {"aud": TOKEN_URL, "iss": CLIENT, "sub": CLIENT, "nbf": int(START), "iat": int(START),
                      "exp": int(START) + 600}
    assert "app.key" in repr(transport) and "BEGIN" not in repr(transport)


def test_each_assertion_has_a_fresh_jti(httpx_mock: HTTPXMock, make: Any, tmp_path: Path,
                                        certificate: tuple[rsa.RSAPrivateKey, x509.Certificate]) -> None:
    key_file, cert_file = write_key_pair(tmp_path, *certificate)
    add_token(httpx_mock, expires_in=0)
    add_token(httpx_mock, expires_in=0)
    add_graph(httpx_mock)
    transport = make(certificateKeyFile=key_file, certificateFile=cert_file)
    transport.invoke([get("/a")])
    transport.invoke([get("/b")])
    jtis = {json.loads(b64decode(form_of(r)["client_assertion"].split(".")[1]))["jti"]
            for r in token_requests(httpx_mock)}
    assert len(jtis) == 2


@pytest.mark.skipif(os.name == "nt", reason="POSIX file modes")
def test_a_private_key_others_can_read_is_refused(httpx_mock: HTTPXMock, make: Any, tmp_path: Path,
                                                  certificate: tuple[rsa.RSAPrivateKey, x509.Certificate]) -> None:
    key_file, cert_file = write_key_pair(tmp_path, *certificate, mode=0o640)
    with pytest.raises(TransportError, match=r"certificateKeyFile: .* \(mode 0640\)"):
        make(certificateKeyFile=key_file, certificateFile=cert_file).invoke([get("/a")])
    assert httpx_mock.get_requests() == []


def test_a_certificate_of_another_key_is_refused(make: Any, tmp_path: Path,
                                                 certificate: tuple[rsa.RSAPrivateKey, x509.Certificate]) -> None:
    _, cert = certificate
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file, cert_file = write_key_pair(tmp_path, other, cert)
    with pytest.raises(TransportError, match="is not the certificate of the key in"):
        make(certificateKeyFile=key_file, certificateFile=cert_file).invoke([get("/a")])


# --- secrets never shown -----------------------------------------------------------------------------

ECHO = f"secret {SECRET} token {TOKEN}"
"""What a careless server might echo (the token only where the transport has received it)."""


def scenario_token_error_echoing_the_secret(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="POST", url=TOKEN_URL, status_code=400, json={
        "error": "invalid_request", "error_description": f"AADSTS900144: bad client_secret={SECRET} ({SECRET})"})


def scenario_token_server_error(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="POST", url=TOKEN_URL, status_code=500, text=f"boom {SECRET}")


def scenario_batch_error_echoing_the_token(httpx_mock: HTTPXMock) -> None:
    add_token(httpx_mock)
    httpx_mock.add_response(method="POST", url=BATCH_URL, status_code=400,
                            json={"error": {"code": "BadRequest", "message": f"Bearer {TOKEN} rejected: {ECHO}"}})


def scenario_two_401s(httpx_mock: HTTPXMock) -> None:
    add_token(httpx_mock, TOKEN)
    add_token(httpx_mock, TOKEN2)
    body = {"error": {"code": "InvalidAuthenticationToken", "message": f"tokens {TOKEN} {TOKEN2} {ECHO}"}}
    httpx_mock.add_response(method="POST", url=BATCH_URL, status_code=401, json=body, is_reusable=True)


def scenario_throttled_until_the_end(httpx_mock: HTTPXMock) -> None:
    add_token(httpx_mock)
    httpx_mock.add_response(method="POST", url=BATCH_URL, status_code=429, is_reusable=True,
                            json={"error": {"code": ECHO, "message": ECHO}})


def scenario_connection_error(httpx_mock: HTTPXMock) -> None:
    add_token(httpx_mock)
    httpx_mock.add_exception(httpx.ConnectError(f"refused {ECHO}"), url=BATCH_URL, is_reusable=True)


def scenario_garbled_batch(httpx_mock: HTTPXMock) -> None:
    add_token(httpx_mock)
    httpx_mock.add_response(method="POST", url=BATCH_URL, json={"responses": [{"id": ECHO, "status": 200}]})


SCENARIOS = [scenario_token_error_echoing_the_secret, scenario_token_server_error,
             scenario_batch_error_echoing_the_token, scenario_two_401s, scenario_throttled_until_the_end,
             scenario_connection_error, scenario_garbled_batch]


def assert_clean(text: str) -> None:
    for value in (SECRET, TOKEN, TOKEN2, "never-shown", "s3cr3t"):
        assert value not in text, f"{value!r} leaked into {text!r}"


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda f: f.__name__.removeprefix("scenario_"))
def test_secrets_and_tokens_never_appear_in_errors(httpx_mock: HTTPXMock, make: Any,
                                                   scenario: Callable[[HTTPXMock], None]) -> None:
    scenario(httpx_mock)
    transport = make(maxRetrySeconds=3)
    with pytest.raises(TransportError) as caught:
        transport.invoke([get("/a")])
    error = caught.value
    assert_clean(str(error))
    assert_clean(repr(error))
    if scenario is not scenario_token_server_error:  # (that one's body is not shown at all)
        assert MASK in str(error)  # the scenario echoed a secret or a token: it was there, and was masked
    # Nothing is chained: an httpx exception would carry the request and its Authorization header.
    assert error.__cause__ is None and error.__context__ is None
    assert_clean(repr(transport))
    assert_clean(repr(vars(transport)))
    assert_clean(repr(vars(transport.tokens)))


def test_errors_that_echo_secrets_are_masked(httpx_mock: HTTPXMock, make: Any) -> None:
    scenario_token_error_echoing_the_secret(httpx_mock)
    with pytest.raises(TransportError) as caught:
        make().invoke([get("/a")])
    assert f"bad client_secret={MASK}" in str(caught.value)


def test_inner_error_results_echoing_secrets_are_masked(httpx_mock: HTTPXMock, make: Any) -> None:
    add_token(httpx_mock)
    add_graph(httpx_mock, lambda _b, _i: (400, {"error": {"code": "Request_BadRequest", "message": ECHO}}, {}))
    secret_body = Command("PATCH", {"path": SP, "body": {"passwordCredentials": [{"secretText": "pw-HIDDEN-1"}]}},
                          sensitive=frozenset({"body"}))
    transport = make()
    results = transport.invoke([get("/a"), secret_body], stop_on_error=False)
    for result in results:
        assert result.error is not None
        assert_clean(result.error)
        assert MASK in result.error
    echoed = transport._result(secret_body, _answer(400, {"error": {"code": "Request_BadRequest",
                                                                    "message": "value pw-HIDDEN-1 is invalid"}}))
    assert echoed.error == f"PATCH {SP}: 400 Request_BadRequest: value {MASK} is invalid"


def _answer(status: int, body: Any) -> Any:
    from reconciler.transports.graph import _Answer

    return _Answer(status, {}, body)


def test_assertions_echoed_by_the_server_are_masked(httpx_mock: HTTPXMock, make: Any, tmp_path: Path,
                                                    certificate: tuple[rsa.RSAPrivateKey, x509.Certificate]) -> None:
    key_file, cert_file = write_key_pair(tmp_path, *certificate)

    def echo_assertion(request: httpx.Request) -> httpx.Response:
        assertion = form_of(request)["client_assertion"]
        return httpx.Response(400, json={"error": "invalid_client", "error_description": f"AADSTS700027: {assertion}"})

    httpx_mock.add_callback(echo_assertion, url=TOKEN_URL)
    with pytest.raises(TransportError) as caught:
        make(certificateKeyFile=key_file, certificateFile=cert_file).invoke([get("/a")])
    assert f"AADSTS700027: {MASK}" in str(caught.value)
    assert "eyJ" not in str(caught.value)


def test_an_opaque_token_is_masked_by_value(httpx_mock: HTTPXMock, make: Any) -> None:
    opaque = "opaque-access-token-0123456789"  # not shaped like a JWT: only knowing the value masks it
    add_token(httpx_mock, opaque)
    add_graph(httpx_mock, lambda _b, _i: (400, {"error": {"code": "BadRequest", "message": f"bad {opaque}"}}, {}))
    [result] = make().invoke([get("/a")])
    assert result.error == f"GET /a: 400 BadRequest: bad {MASK}"


def test_anything_shaped_like_a_jwt_is_masked(httpx_mock: HTTPXMock, make: Any) -> None:
    stranger = "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJzb21lb25lIn0.c2lnbmF0dXJl"  # a token this transport never held
    add_token(httpx_mock)
    add_graph(httpx_mock, lambda _b, _i: (400, {"error": {"code": "BadRequest", "message": f"bad {stranger}"}}, {}))
    [result] = make().invoke([get("/a")])
    assert result.error == f"GET /a: 400 BadRequest: bad {MASK}"


def test_repr_shows_where_the_credential_is_never_what(httpx_mock: HTTPXMock, make: Any) -> None:
    add_token(httpx_mock)
    add_graph(httpx_mock)
    transport = make()
    transport.invoke([get("/a")])  # secret read, token cached
    text = repr(transport)
    assert text == ("GraphTransport(graph (tenant), tenant=contoso.onmicrosoft.com, "
                    f"client={CLIENT}, graph=https://graph.microsoft.com/v1.0, credential=client secret from the "
                    "environment variable RECONCILE_GRAPH_CLIENT_SECRET)")
    for shown in (repr(vars(transport)), repr(vars(transport.tokens)), repr(transport.credential),
                  repr(vars(transport.credential)), str(transport.tokens._token)):
        assert_clean(shown)


# --- settings, registration, lifecycle -----------------------------------------------------------------


def test_from_target_builds_without_network_or_secrets(httpx_mock: HTTPXMock) -> None:
    target = TargetSpec("tenant", "office365", {"transport": "graph", "tenantId": CLIENT, "clientId": CLIENT})
    transport = GraphTransport.from_target(target)
    assert transport.name == "graph (tenant)"
    assert transport.settings.batch_size == 20 and transport.settings.timeout == 30
    assert transport.settings.max_retry_seconds == 120
    assert transport._client is None
    transport.close()
    assert httpx_mock.get_requests() == []


@pytest.mark.parametrize("connection,message", [
    ({"clientId": CLIENT}, "connection.tenantId is required"),
    ({"tenantId": "not a tenant", "clientId": CLIENT}, "connection.tenantId must be a GUID or a domain"),
    ({"tenantId": TENANT}, "connection.clientId is required"),
    ({"tenantId": TENANT, "clientId": "app"}, "connection.clientId must be a GUID"),
    ({"tenantId": TENANT, "clientId": CLIENT, "secret": "x"}, "unknown graph connection setting"),
    ({"tenantId": TENANT, "clientId": CLIENT, "clientSecretEnv": "A", "clientSecretFile": "f"},
     "give exactly one of clientSecretEnv, clientSecretFile, or certificateKeyFile \\+ certificateFile"),
    ({"tenantId": TENANT, "clientId": CLIENT, "certificateKeyFile": "k"}, "needs connection.certificateFile"),
    ({"tenantId": TENANT, "clientId": CLIENT, "certificateFile": "c"}, "needs connection.certificateKeyFile"),
    ({"tenantId": TENANT, "clientId": CLIENT, "batchSize": 21}, "batchSize must be an integer from 1 to 20"),
    ({"tenantId": TENANT, "clientId": CLIENT, "timeoutSeconds": 0}, "timeoutSeconds must be more than 0"),
    ({"tenantId": TENANT, "clientId": CLIENT, "graphUrl": "http://graph.example.com"}, "must use https"),
    ({"tenantId": TENANT, "clientId": CLIENT, "clientSecretEnv": "A=B"}, "environment variable name"),
])
def test_bad_connection_settings(connection: dict[str, Any], message: str) -> None:
    with pytest.raises(TransportError, match=message):
        settings_from_connection(connection, target="tenant")


def test_plain_http_to_loopback_is_allowed_for_the_lab() -> None:
    settings = settings_from_connection({"tenantId": TENANT, "clientId": CLIENT,
                                         "graphUrl": "http://127.0.0.1:8470/graph/",
                                         "authority": "http://localhost:8470/login"})
    assert settings.graph_root == "http://127.0.0.1:8470/graph/v1.0"
    assert settings.token_url == f"http://localhost:8470/login/{TENANT}/oauth2/v2.0/token"
    assert settings.scope == "http://127.0.0.1:8470/graph/.default"


def test_connection_schema_agrees_with_the_checks() -> None:
    schema = GraphTransport.connection_schema
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    good = {"tenantId": TENANT, "clientId": CLIENT, "certificateKeyFile": "k.pem", "certificateFile": "c.cer",
            "timeoutSeconds": 10, "maxRetrySeconds": 0, "batchSize": 5, "graphUrl": "https://graph.microsoft.us"}
    assert list(validator.iter_errors(good)) == []
    assert list(validator.iter_errors({**good, "tenantId": CLIENT})) == []
    for bad in ({**good, "clientSecret": "x"}, {**good, "clientId": "x"}, {**good, "batchSize": 21},
                {**good, "tenantId": "not a tenant"}, {"clientId": CLIENT}):
        assert list(validator.iter_errors(bad)), bad


def test_registered_as_the_graph_transport() -> None:
    assert Registry.from_entry_points().transports["graph"] is GraphTransport


def test_one_client_per_transport_closed_by_close(httpx_mock: HTTPXMock, make: Any) -> None:
    add_token(httpx_mock)
    add_graph(httpx_mock)
    transport = make()
    transport.invoke([get("/a")])
    client = transport._client
    transport.invoke([get("/b")])
    assert transport._client is client and client is not None
    transport.close()
    assert client.is_closed
    with pytest.raises(TransportError, match="the transport is closed"):
        transport.invoke([get("/c")])


def test_a_host_that_does_not_resolve_fails_at_once_with_one_line(httpx_mock: HTTPXMock, make: Any,
                                                                  clock: FakeClock) -> None:
    """It used to retry for the whole throttling budget (91 s as reported) before saying anything."""
    add_token(httpx_mock)
    httpx_mock.add_exception(httpx.ConnectError("[Errno -2] Name or service not known"), url=BATCH_URL,
                             is_reusable=True)
    with pytest.raises(TransportError) as caught:
        make(maxRetrySeconds=120).invoke([get("/a")])
    assert clock.sleeps == []
    assert str(caught.value) == (f"graph (tenant): POST {BATCH_URL}: cannot connect (ConnectError: [Errno -2] Name "
                                 "or service not known)")


def test_connection_refusals_give_up_within_the_request_timeout(httpx_mock: HTTPXMock, make: Any,
                                                                clock: FakeClock) -> None:
    add_token(httpx_mock)
    httpx_mock.add_exception(httpx.ConnectError("[Errno 111] Connection refused"), url=BATCH_URL, is_reusable=True)
    with pytest.raises(TransportError, match="Connection refused"):
        make(maxRetrySeconds=120, timeoutSeconds=5).invoke([get("/a")])
    assert sum(clock.sleeps) <= 5
