"""The Microsoft Graph transport (`transport: graph`): Office 365 / Microsoft Entra ID over REST.

A Graph operation is a Command whose `cmdlet` is the HTTP method (GET, POST, PATCH, DELETE) and
whose parameters are `path` (relative to `{graphUrl}/v1.0`, e.g.
`/servicePrincipals(appId='00000004-0000-0ff1-ce00-000000000000')`), optional `query` (e.g.
`{"$select": "id,appId"}`) and optional `body` (JSON). Its result is `ok` for a 2xx answer, with
the JSON body as the one output object (none for a 204); a failure names the method, path, HTTP
status, Graph error code and message.

Protocol:

* JSON batching: each `invoke` sends `POST {graphUrl}/v1.0/$batch` with up to `batchSize` (<= 20)
  requests, numbered "1".."n"; more commands make several batches, in order. With `stop_on_error`
  every request `dependsOn` the one before it, so Graph runs them in order and answers 424 Failed
  Dependency for those after a failure: results stop at the first failure (a 424 after it means
  "not run" and is not reported) and no later batch is sent. Without it, requests carry no
  `dependsOn` (Graph may run them in any order) and every command gets a result. Answers are
  matched by id. `round_trips` counts the `$batch` requests that got an HTTP answer (token
  requests are not counted; a retried batch counts each time).
* Retries: a whole-batch or token answer 429 or 503, a connection error or a timeout is retried
  after `Retry-After` (seconds or an HTTP date) or else an exponential backoff from 1 s (at most
  30 s per wait). An inner answer 429 or 503 is re-sent with everything after it (with
  `dependsOn` nothing after it ran) or, without `stop_on_error`, on its own. Waits stop when the
  next one would take the invoke past `maxRetrySeconds`: a batch or token request then fails with
  TransportError naming the status and how long it tried; a throttled command gets an error result.
* Results used later in the same invoke: a command with parameter `result: <name>` keeps its answer under
  that name, and a later command may hold `{{<name>#<path>}}` in its path or in any string of its body (e.g.
  `{{application:X#value.0.appId}}`: the appId of the first object a list query found). Such a command starts
  a new batch, sent once the answer it needs is in; a reference the answer does not hold is an error result
  for that command (nothing is sent for it). This is how one apply creates an application, then its service
  principal from the appId Graph assigned (JSON batching itself cannot pass values between requests).
* Tokens (graph_auth.py): app-only, client-credentials grant, cached. A `$batch` answered 401
  `InvalidAuthenticationToken` (expired mid-run) gets one new token and is sent once more.

No message, repr or exception ever contains the client secret, the private key, an assertion or
an access token: every TransportError and error result is scrubbed of them, and errors are raised
without the httpx exception (whose request carries the Authorization header) attached.
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.utils
import ipaddress
import json
import math
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import httpx

from reconciler.errors import TransportError
from reconciler.model import TargetSpec
from reconciler.transports import psjson
from reconciler.transports.base import Command, CommandResult
from reconciler.transports.graph_auth import (
    AUTH_HINT,
    DEFAULT_SECRET_ENV,
    CertificateAssertion,
    ClientSecret,
    Credential,
    TokenProvider,
    scrub,
)

DEFAULT_AUTHORITY = "https://login.microsoftonline.com"
DEFAULT_GRAPH_URL = "https://graph.microsoft.com"
GRAPH_VERSION = "v1.0"
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_RETRY_SECONDS = 120.0
MAX_BATCH_SIZE = 20
"""Graph's own limit on requests in one JSON batch."""
RETRY_STATUSES = frozenset({429, 503})
FIRST_BACKOFF = 1.0
MAX_BACKOFF = 30.0
METHODS = ("GET", "POST", "PATCH", "DELETE")
PARAMETERS = frozenset({"path", "query", "body", "result"})
REFERENCE = re.compile(r"\{\{([^{}#]+)#([A-Za-z0-9_.]+)\}\}")
"""`{{<name>#<dotted path>}}`: a value from the answer an earlier command of the same invoke kept as <name>."""
PERMISSION_HINT = ("(the app needs the Microsoft Graph application permission Application.ReadWrite.All, "
                   "admin-consented)")
EXPIRED_TOKEN = "InvalidAuthenticationToken"

GUID_PATTERN = r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$"
DOMAIN_PATTERN = r"^(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z][A-Za-z0-9-]{0,62}$"
URL_PATTERN = r"^https?://[^\s/?#]+(?:/[^\s?#]*)?$"
ENV_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
_CONTROL = re.compile(r"[\x00-\x20\x7f?#]")


# --- settings ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GraphSettings:
    """A target's checked connection settings. Holds where credentials are, never a credential."""

    tenant_id: str
    client_id: str
    authority: str = DEFAULT_AUTHORITY
    graph_url: str = DEFAULT_GRAPH_URL
    secret_env: str | None = DEFAULT_SECRET_ENV
    secret_env_explicit: bool = False
    secret_file: Path | None = None
    key_file: Path | None = None
    certificate_file: Path | None = None
    timeout: float = DEFAULT_TIMEOUT
    max_retry_seconds: float = DEFAULT_MAX_RETRY_SECONDS
    batch_size: int = MAX_BATCH_SIZE

    @property
    def token_url(self) -> str:
        return f"{self.authority}/{self.tenant_id}/oauth2/v2.0/token"

    @property
    def graph_root(self) -> str:
        return f"{self.graph_url}/{GRAPH_VERSION}"

    @property
    def scope(self) -> str:
        return f"{self.graph_url}/.default"

    def credential(self, environ: Mapping[str, str] | None = None) -> Credential:
        """The one credential these settings name (nothing is read until the first token request)."""
        if self.key_file is not None and self.certificate_file is not None:
            return CertificateAssertion(self.key_file, self.certificate_file)
        if self.secret_file is not None:
            return ClientSecret.from_file(self.secret_file)
        name = self.secret_env or DEFAULT_SECRET_ENV
        missing = "" if self.secret_env_explicit else (
            f"no credential for client {self.client_id}: set the environment variable {name} to the client "
            "secret, or name one credential in the connection: clientSecretEnv (another environment variable), "
            "clientSecretFile (a file only you can read), or certificateKeyFile + certificateFile")
        return ClientSecret.from_env(name, environ, missing=missing)


def settings_from_connection(connection: Mapping[str, Any], *, target: str = "?",
                             base: Path | None = None) -> GraphSettings:
    """Check a `connection` block (its `transport` key is ignored). Reads no file and no secret.

    Relative paths are resolved against `base` (default: the working directory). Raises
    TransportError naming the target and the field.
    """
    base = Path.cwd() if base is None else base
    unknown = sorted(set(connection) - set(GraphTransport.connection_schema["properties"]) - {"transport"})
    if unknown:
        raise TransportError(f"target {target!r}: unknown graph connection setting(s): {', '.join(unknown)}")

    def problem(name: str, message: str) -> TransportError:
        return TransportError(f"target {target!r}: connection.{name} {message}")

    def text(name: str, pattern: str, expected: str, default: str | None = None) -> str | None:
        value = connection.get(name, default)
        if value is None:
            return None
        if not isinstance(value, str) or not re.match(pattern, value):
            raise problem(name, f"must be {expected}")
        return value

    def url(name: str, default: str) -> str:
        value = text(name, URL_PATTERN, "an http(s) URL without query or fragment", default)
        assert value is not None
        parsed = httpx.URL(value)
        if parsed.scheme == "http" and not _loopback(parsed.host):
            raise problem(name, "must use https (plain http only to a loopback address, e.g. the lab)")
        return value.rstrip("/")

    def number(name: str, default: float, *, low: float, strict: bool) -> float:
        value = connection.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise problem(name, "must be a number")
        if value < low or (strict and value == low):
            raise problem(name, f"must be {'more than' if strict else 'at least'} {low:g}")
        return float(value)

    def path(name: str) -> Path | None:
        value = connection.get(name)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise problem(name, "must be a file path")
        return base / value

    tenant = connection.get("tenantId")
    if tenant is None:
        raise problem("tenantId", "is required (the directory (tenant) id, or a verified domain of the tenant)")
    if not isinstance(tenant, str) or not (re.match(GUID_PATTERN, tenant) or re.match(DOMAIN_PATTERN, tenant)):
        raise problem("tenantId", "must be a GUID or a domain name such as contoso.onmicrosoft.com")
    client = connection.get("clientId")
    if client is None:
        raise problem("clientId", "is required (the application (client) id of the app registration)")
    if not isinstance(client, str) or not re.match(GUID_PATTERN, client):
        raise problem("clientId", "must be a GUID (the application (client) id)")
    secret_env = text("clientSecretEnv", ENV_PATTERN, "an environment variable name")
    secret_file = path("clientSecretFile")
    key_file = path("certificateKeyFile")
    certificate_file = path("certificateFile")
    if (key_file is None) != (certificate_file is None):
        given, needed = ("certificateKeyFile", "certificateFile") if key_file else ("certificateFile",
                                                                                  "certificateKeyFile")
        raise problem(given, f"needs connection.{needed} too (a certificate assertion needs both)")
    chosen = [name for name, value in (("clientSecretEnv", secret_env), ("clientSecretFile", secret_file),
                                       ("certificateKeyFile + certificateFile", key_file)) if value is not None]
    if len(chosen) > 1:
        raise TransportError(f"target {target!r}: connection names {len(chosen)} credentials ({', '.join(chosen)}); "
                             "give exactly one of clientSecretEnv, clientSecretFile, or certificateKeyFile + "
                             "certificateFile")
    batch_size = connection.get("batchSize", MAX_BATCH_SIZE)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise problem("batchSize", f"must be an integer from 1 to {MAX_BATCH_SIZE}")
    return GraphSettings(
        tenant_id=tenant,
        client_id=client,
        authority=url("authority", DEFAULT_AUTHORITY),
        graph_url=url("graphUrl", DEFAULT_GRAPH_URL),
        secret_env=secret_env or DEFAULT_SECRET_ENV,
        secret_env_explicit=secret_env is not None,
        secret_file=secret_file,
        key_file=key_file,
        certificate_file=certificate_file,
        timeout=number("timeoutSeconds", DEFAULT_TIMEOUT, low=0, strict=True),
        max_retry_seconds=number("maxRetrySeconds", DEFAULT_MAX_RETRY_SECONDS, low=0, strict=False),
        batch_size=batch_size,
    )


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- retry timing ------------------------------------------------------------------------------------


class _Budget:
    """The retry time one invoke may spend: a wait is allowed while it ends within the limit."""

    def __init__(self, clock: Callable[[], float], limit: float) -> None:
        self.clock = clock
        self.limit = limit
        self.start = clock()

    def elapsed(self) -> float:
        return max(0.0, self.clock() - self.start)

    def allows(self, wait: float) -> bool:
        return self.elapsed() + wait <= self.limit

    def gave_up(self) -> str:
        return f"gave up after retrying for {self.elapsed():.0f} s (connection.maxRetrySeconds is {self.limit:g})"


def backoff(attempt: int) -> float:
    """1, 2, 4, ... seconds, at most 30."""
    return min(MAX_BACKOFF, FIRST_BACKOFF * 2.0 ** min(attempt, 16))


def retry_after(headers: Mapping[str, Any] | httpx.Headers, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None if absent or bad."""
    value: Any = None
    if isinstance(headers, httpx.Headers):
        value = headers.get("retry-after")
    else:
        for name, item in headers.items():
            if isinstance(name, str) and name.lower() == "retry-after":
                value = item
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) and value >= 0 else None
    text = str(value).strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        return max(0.0, when.timestamp() - now)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


# --- answers -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Answer:
    """One inner response of a batch."""

    status: int
    headers: Mapping[str, Any]
    body: Any


def graph_error(body: Any) -> tuple[str, str]:
    """(code, message) of a Graph error document `{"error": {"code", "message"}}`; empty when not one."""
    if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        error = body["error"]
        return str(error.get("code") or ""), str(error.get("message") or "").strip()
    return "", ""


def _status_text(status: int, code: str, message: str) -> str:
    reason = httpx.codes.get_reason_phrase(status)
    text = f"{status} {code}" if code else f"{status} {reason}".rstrip()
    if message:
        text += f": {message}"
    if status == 401:
        text += f": authentication failed: {AUTH_HINT} {PERMISSION_HINT}"
    elif status == 403:
        text += f" {PERMISSION_HINT}"
    return text


# --- the transport -----------------------------------------------------------------------------------


class GraphTransport:
    """Sends Graph requests as JSON batches with an app-only token (one httpx.Client per transport)."""

    connection_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "description": "Microsoft Graph (Office 365 / Entra ID) with an app registration's own identity "
                       "(client credentials). The credential is never written here: it comes from an "
                       "environment variable, a private file or a certificate's private key file.",
        "required": ["tenantId", "clientId"],
        "properties": {
            "tenantId": {"type": "string",
                         "anyOf": [{"pattern": GUID_PATTERN}, {"pattern": DOMAIN_PATTERN}],
                         "description": "The directory (tenant) id, or a verified domain of the tenant "
                                        "(e.g. contoso.onmicrosoft.com)."},
            "clientId": {"type": "string", "pattern": GUID_PATTERN,
                         "description": "The application (client) id of the app registration. It needs the "
                                        "Microsoft Graph application permission Application.ReadWrite.All, "
                                        "admin-consented."},
            "authority": {"type": "string", "pattern": URL_PATTERN,
                          "description": f"The Entra ID sign-in endpoint (default {DEFAULT_AUTHORITY}; "
                                         "national clouds have their own). Plain http only to loopback."},
            "graphUrl": {"type": "string", "pattern": URL_PATTERN,
                         "description": f"The Microsoft Graph endpoint (default {DEFAULT_GRAPH_URL}); the token "
                                        "scope is `{graphUrl}/.default`. Plain http only to loopback (the lab)."},
            "clientSecretEnv": {"type": "string", "pattern": ENV_PATTERN,
                                "description": "Name of the environment variable holding the client secret "
                                               f"(default {DEFAULT_SECRET_ENV} when no other credential is "
                                               "named). Never the secret itself."},
            "clientSecretFile": {"type": "string", "minLength": 1,
                                 "description": "A file holding the client secret on one line; refused unless "
                                                "only its owner can read it (chmod 600)."},
            "certificateKeyFile": {"type": "string", "minLength": 1,
                                   "description": "Unencrypted PEM RSA private key of a certificate uploaded to the "
                                                  "app registration (chmod 600); with certificateFile, signs a "
                                                  "client assertion instead of sending a secret."},
            "certificateFile": {"type": "string", "minLength": 1,
                                "description": "That certificate (PEM or DER), which names it in the "
                                               "assertion (x5t, x5t#S256)."},
            "timeoutSeconds": {"type": "number", "exclusiveMinimum": 0,
                               "description": f"Timeout of each HTTP request (default {DEFAULT_TIMEOUT:g})."},
            "maxRetrySeconds": {"type": "number", "minimum": 0,
                                "description": "How long one batch of commands may keep retrying throttled (429, "
                                               "503) or failed connections, waits included (default "
                                               f"{DEFAULT_MAX_RETRY_SECONDS:g})."},
            "batchSize": {"type": "integer", "minimum": 1, "maximum": MAX_BATCH_SIZE,
                          "description": f"Requests per JSON batch (default {MAX_BATCH_SIZE}, Graph's limit)."},
        },
        "additionalProperties": False,
    }

    def __init__(
        self,
        settings: GraphSettings,
        *,
        name: str = "graph",
        environ: Mapping[str, str] | None = None,
        credential: Credential | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.name = name
        self.credential = credential if credential is not None else settings.credential(environ)
        self._sleep = sleep
        self._clock = clock
        self._wall_clock = wall_clock
        self.tokens = TokenProvider(
            token_url=settings.token_url, client_id=settings.client_id, scope=settings.scope,
            credential=self.credential, post=self._post_form, clock=clock, wall_clock=wall_clock)
        self.round_trips = 0
        self._client: httpx.Client | None = None
        self._budget: _Budget | None = None
        self._closed = False
        self._lock = threading.RLock()

    @classmethod
    def from_target(cls, target: TargetSpec) -> GraphTransport:
        """Build from a target's `connection` block. Opens nothing and reads no credential yet."""
        return cls(settings_from_connection(target.connection, target=target.name), name=f"graph ({target.name})")

    def __repr__(self) -> str:
        return (f"GraphTransport({self.name}, tenant={self.settings.tenant_id}, client={self.settings.client_id}, "
                f"graph={self.settings.graph_root}, credential={self.credential.description})")

    # --- the seam ---------------------------------------------------------------------------------

    def invoke(self, commands: Sequence[Command], *, stop_on_error: bool = True) -> list[CommandResult]:
        """Run the commands as JSON batches; see the module docstring for the protocol."""
        with self._lock:
            if self._closed:
                raise TransportError(f"{self.name}: the transport is closed")
            if not commands:
                return []
            self._budget = _Budget(self._clock, self.settings.max_retry_seconds)
            failure: TransportError | None = None
            try:
                return self._invoke(commands, stop_on_error)
            except TransportError as exc:
                failure = TransportError(self._scrub(f"{self.name}: {exc}", commands))
            finally:
                self._budget = None
            assert failure is not None
            # Raised here, outside the handler, so no httpx exception (whose request carries the
            # Authorization header) is chained to what the caller sees.
            raise failure

    def close(self) -> None:
        with self._lock:
            self._closed = True
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # --- batching ---------------------------------------------------------------------------------

    def _invoke(self, commands: Sequence[Command], stop_on_error: bool) -> list[CommandResult]:
        refusals = {i: r for i, c in enumerate(commands) if (r := self._refusal(c)) is not None}
        if stop_on_error and refusals:
            first = min(refusals)
            sent = list(commands[:first])
            tail = [refusals[first]]
        else:
            sent = [c for i, c in enumerate(commands) if i not in refusals]
            tail = []
        answered: list[CommandResult] = []
        kept: dict[str, Any] = {}
        for chunk in _chunks(sent, self.settings.batch_size):
            resolved = [_resolve(c, kept) for c in chunk]
            unresolved = next((i for i, r in enumerate(resolved) if isinstance(r, str)), None)
            if stop_on_error and unresolved is not None:
                resolved = resolved[:unresolved + 1]  # nothing after a command that cannot be sent
            commands_sent = [r for r in resolved if isinstance(r, Command)]
            try:
                results = self._run_batch(commands_sent, stop_on_error) if commands_sent else []
            except TransportError as exc:
                if not answered:
                    raise
                raise TransportError(f"{exc} (the {len(answered)} command(s) before this batch had already run: "
                                     "re-plan before retrying)") from None
            stopped = len(results) < len(commands_sent) or bool(results and not results[-1].ok)
            if unresolved is not None and not (stop_on_error and stopped):
                ran = iter(results)
                results = [CommandResult(command, ok=False, error=self._scrub(r, [command])) if isinstance(r, str)
                           else next(ran) for command, r in zip(chunk, resolved, strict=False)]
                stopped = True
            answered.extend(results)
            for result in results:
                name = result.command.parameters.get("result")
                if result.ok and isinstance(name, str):
                    kept[name] = result.output[0] if result.output else {}
            if stop_on_error and stopped:
                return answered
        if stop_on_error:
            return answered + tail
        merged = iter(answered)
        return [refusals[i] if i in refusals else next(merged) for i in range(len(commands))]

    def _run_batch(self, chunk: Sequence[Command], stop_on_error: bool) -> list[CommandResult]:
        """One batch, re-sending throttled inner requests (with stop_on_error: and the tail after them)."""
        final: dict[int, CommandResult] = {}
        pending = list(range(len(chunk)))
        attempt = 0
        while pending:
            answers = self._post_batch([chunk[i] for i in pending], stop_on_error)
            throttled: dict[int, _Answer] = {}
            resend: list[int] = []
            for position, index in enumerate(pending):
                answer = answers[position]
                if answer.status in RETRY_STATUSES:
                    throttled[index] = answer
                    if stop_on_error:  # nothing after it ran (424): re-send it and the rest
                        resend = pending[position:]
                        break
                    resend.append(index)
                    continue
                final[index] = self._result(chunk[index], answer)
                if stop_on_error and not final[index].ok:
                    break
            if not resend:
                break
            waits = [w for a in throttled.values() if (w := retry_after(a.headers, self._wall_clock())) is not None]
            wait = max(waits) if waits else backoff(attempt)
            assert self._budget is not None
            if not self._budget.allows(wait):
                for index, answer in throttled.items():
                    result = self._result(chunk[index], answer)
                    final[index] = CommandResult(chunk[index], ok=False,
                                                 error=f"{result.error} ({self._budget.gave_up()})")
                break
            self._sleep(wait)
            attempt += 1
            pending = resend
        return [final[i] for i in sorted(final)]

    def _post_batch(self, commands: Sequence[Command], stop_on_error: bool) -> list[_Answer]:
        """One `$batch` request (retried as a whole when throttled); the answers in command order."""
        requests: list[dict[str, Any]] = []
        for number, command in enumerate(commands, start=1):
            item: dict[str, Any] = {"id": str(number), "method": command.cmdlet.upper(),
                                    "url": batch_url(command)}
            if stop_on_error and number > 1:
                item["dependsOn"] = [str(number - 1)]
            if "body" in command.parameters:
                item["headers"] = {"Content-Type": "application/json"}
                item["body"] = command.parameters["body"]
            requests.append(item)
        content = json.dumps({"requests": requests}, allow_nan=False, separators=(",", ":")).encode("utf-8")
        url = f"{self.settings.graph_root}/$batch"
        what = f"POST {url}"
        refreshed = False
        while True:
            response = self._send(url, what, content=content, authorized=True, counted=True)
            code, message = graph_error(_json(response))
            if response.status_code == 401 and code == EXPIRED_TOKEN and not refreshed:
                self.tokens.invalidate()  # expired mid-run: one new token, one more try
                refreshed = True
                continue
            break
        if not response.is_success:
            raise TransportError(f"{what}: {_status_text(response.status_code, code, message)}")
        return self._answers(_json(response), len(commands), what)

    def _answers(self, body: Any, count: int, what: str) -> list[_Answer]:
        raw = body.get("responses") if isinstance(body, Mapping) else None
        if not isinstance(raw, list):
            raise TransportError(f"{what}: the answer has no list of responses")
        by_id: dict[str, _Answer] = {}
        for item in raw:
            if not isinstance(item, Mapping) or not isinstance(item.get("id"), str) \
                    or isinstance(item.get("status"), bool) or not isinstance(item.get("status"), int):
                raise TransportError(f"{what}: a response is not of the form {{\"id\": \"...\", \"status\": ...}}")
            key = item["id"]
            if key in by_id or not key.isdigit() or not 1 <= int(key) <= count:
                raise TransportError(f"{what}: unexpected or repeated response id "
                                     f"{self._scrub(key)[:40]!r}")
            headers = item.get("headers")
            by_id[key] = _Answer(item["status"], headers if isinstance(headers, Mapping) else {}, item.get("body"))
        missing = [str(n) for n in range(1, count + 1) if str(n) not in by_id]
        if missing:
            raise TransportError(f"{what}: no response for request id(s) {', '.join(missing)}; "
                                 "the batch may have partly run: re-plan before retrying")
        return [by_id[str(n)] for n in range(1, count + 1)]

    def _result(self, command: Command, answer: _Answer) -> CommandResult:
        where = f"{command.cmdlet.upper()} {command.parameters.get('path')}"
        if 200 <= answer.status < 300:
            body = answer.body
            if body is None or body == "":
                output: tuple[Mapping[str, Any], ...] = ()
            elif isinstance(body, Mapping):
                output = (body,)
            else:
                output = ({"value": body},)
            return CommandResult(command, ok=True, output=output, status=answer.status)
        if answer.status == 424:
            error = f"{where}: 424 Failed Dependency: not run, because a request it depends on failed"
        else:
            code, message = graph_error(answer.body)
            error = f"{where}: {_status_text(answer.status, code, message)}"
        return CommandResult(command, ok=False, error=self._scrub(error, [command]), status=answer.status)

    def _refusal(self, command: Command) -> CommandResult | None:
        """Why this command must not be sent, as an error result; None if it may be."""
        method = command.cmdlet.upper()
        path = command.parameters.get("path")
        shown = f"{command.cmdlet} {str(path)[:120]}"

        def refuse(why: str) -> CommandResult:
            return CommandResult(command, ok=False, error=self._scrub(
                f"{shown}: refused by the graph transport: {why}; nothing was sent", [command]))

        if method not in METHODS:
            return refuse(f"the method must be one of {', '.join(METHODS)}")
        unknown = sorted(str(k) for k in command.parameters if k not in PARAMETERS)
        if unknown:
            return refuse(f"unknown parameter(s) {', '.join(unknown)} (expected path, query, body, result)")
        if "result" in command.parameters and not (isinstance(command.parameters["result"], str)
                                                   and command.parameters["result"]):
            return refuse("result must name the answer to keep")
        if isinstance(path, str):
            path = REFERENCE.sub("0", path)  # checked as sent: a reference is replaced by an identifier
        if not isinstance(path, str) or not path.startswith("/") or path.startswith("//") or _CONTROL.search(path):
            return refuse("path must start with / and be relative to the Graph version root, without spaces, "
                          "query or fragment (give the query as `query`)")
        query = command.parameters.get("query", {})
        if not isinstance(query, Mapping) or not all(
                isinstance(k, str) and k and isinstance(v, str | int | float) and not isinstance(v, bool)
                for k, v in query.items()):
            return refuse("query must map option names to text or numbers")
        if "body" in command.parameters:
            if method not in ("POST", "PATCH"):
                return refuse(f"a {method} request has no body")
            try:
                json.dumps(command.parameters["body"], allow_nan=False)
            except (TypeError, ValueError) as exc:  # the text names a type, never a value
                return refuse(f"the body cannot be sent as JSON ({type(exc).__name__})")
        return None

    # --- HTTP ---------------------------------------------------------------------------------------

    def _http(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(timeout=httpx.Timeout(self.settings.timeout), follow_redirects=False,
                                        headers={"User-Agent": "reconciler (graph transport)"})
        return self._client

    def _post_form(self, url: str, form: Mapping[str, str]) -> httpx.Response:
        """The token request (for TokenProvider): retried like a batch, within the same budget."""
        return self._send(url, f"POST {url}", form=form, authorized=False, counted=False)

    def _send(self, url: str, what: str, *, content: bytes | None = None, form: Mapping[str, str] | None = None,
              authorized: bool, counted: bool) -> httpx.Response:
        """POST with retries of 429/503 answers, connection errors and timeouts; any other answer returned."""
        budget = self._budget if self._budget is not None else _Budget(self._clock, self.settings.max_retry_seconds)
        attempt = 0
        connecting: float | None = None
        while True:
            headers = {"Accept": "application/json"}
            if content is not None:
                headers["Content-Type"] = "application/json"
            if authorized:
                headers["Authorization"] = f"Bearer {self.tokens.token()}"
            request = self._http().build_request("POST", url, content=content, data=form, headers=headers,
                                                 timeout=self.settings.timeout)
            response: httpx.Response | None = None
            try:
                response = self._http().send(request)
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                problem = _network_problem(exc, self.settings.timeout, self._scrub)
                if isinstance(exc, httpx.ConnectError):
                    # A host that cannot be resolved or reached does not come back within a throttling budget:
                    # give up at once for a name that does not resolve, else within the request timeout.
                    connecting = connecting if connecting is not None else self._clock()
                    if _unresolvable(exc) or self._clock() - connecting + backoff(attempt) > self.settings.timeout:
                        fatal = f"{what}: {problem}"
                        break
            except httpx.HTTPError as exc:  # a bad URL, proxy or protocol: retrying cannot help
                fatal = f"{what}: cannot send ({type(exc).__name__})"
                break
            wait: float | None = None
            if response is not None:
                if counted:
                    self.round_trips += 1
                if response.status_code not in RETRY_STATUSES:
                    return response
                code, _ = graph_error(_json(response))
                problem = f"still {response.status_code} {response.reason_phrase}".rstrip() + (
                    f" ({code})" if code else "")
                wait = retry_after(response.headers, self._wall_clock())
            if wait is None:
                wait = backoff(attempt)
            if not budget.allows(wait):
                fatal = f"{what}: {problem}; {budget.gave_up()}"
                break
            self._sleep(wait)
            attempt += 1
        raise TransportError(fatal)

    def _scrub(self, text: str, commands: Sequence[Command] = ()) -> str:
        return scrub(psjson.mask_text(text, commands), self.tokens.sensitive_values())


def _references(value: Any) -> set[str]:
    if isinstance(value, str):
        return {m.group(1) for m in REFERENCE.finditer(value)}
    if isinstance(value, Mapping):
        return set().union(*(_references(v) for v in value.values())) if value else set()
    if isinstance(value, list | tuple):
        return set().union(*(_references(v) for v in value)) if value else set()
    return set()


def _chunks(commands: Sequence[Command], size: int) -> list[list[Command]]:
    """Batches of at most `size`; a command that refers to an answer kept in the batch so far starts a new one."""
    chunks: list[list[Command]] = []
    current: list[Command] = []
    named: set[str] = set()
    for command in commands:
        needs = _references(command.parameters.get("path")) | _references(command.parameters.get("body"))
        if current and (len(current) >= size or needs & named):
            chunks.append(current)
            current, named = [], set()
        current.append(command)
        if isinstance(command.parameters.get("result"), str):
            named.add(command.parameters["result"])
    if current:
        chunks.append(current)
    return chunks


def _lookup(kept: Mapping[str, Any], name: str, path: str) -> Any:
    value: Any = kept.get(name)
    for step in path.split("."):
        if isinstance(value, Mapping):
            value = value.get(step)
        elif isinstance(value, list) and step.isdigit() and int(step) < len(value):
            value = value[int(step)]
        else:
            value = None
    return value


def _resolve(command: Command, kept: Mapping[str, Any]) -> Command | str:
    """The command with its references replaced by the values kept, or why it cannot be sent."""
    if not (_references(command.parameters.get("path")) | _references(command.parameters.get("body"))):
        return command
    missing: list[str] = []

    def text(value: str) -> Any:
        whole = REFERENCE.fullmatch(value)
        if whole:
            found = _lookup(kept, whole.group(1), whole.group(2))
            if found is None or found == "":
                missing.append(value)
            return found

        def one(match: re.Match[str]) -> str:
            found = _lookup(kept, match.group(1), match.group(2))
            if found is None or found == "" or isinstance(found, Mapping | list):
                missing.append(match.group(0))
                return match.group(0)
            return str(found)
        return REFERENCE.sub(one, value)

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return text(value)
        if isinstance(value, Mapping):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [walk(v) for v in value]
        return value

    parameters = {k: (walk(v) if k in ("path", "body") else v) for k, v in command.parameters.items()}
    if missing:
        return (f"{command.cmdlet} {command.parameters.get('path')}: not sent: the earlier answer it needs does not "
                f"hold {', '.join(dict.fromkeys(missing))} (the object it looked up was not found)")
    return dataclasses.replace(command, parameters=parameters)


def batch_url(command: Command) -> str:
    """The request's URL inside a batch: its path (relative to the version root) and encoded query."""
    path = str(command.parameters["path"])
    query = command.parameters.get("query") or {}
    if not query:
        return path
    encoded = urllib.parse.urlencode({k: str(v) for k, v in query.items()}, safe="$,()'=:@/",
                                     quote_via=urllib.parse.quote)
    return f"{path}?{encoded}"


def _json(response: httpx.Response) -> Any:
    with contextlib.suppress(ValueError):
        return response.json()
    return None


_NAME_ERRORS = ("name or service not known", "nodename nor servname", "getaddrinfo failed", "no address associated",
                "temporary failure in name resolution", "name resolution")


def _unresolvable(exc: httpx.HTTPError) -> bool:
    """Whether a connect error is a host name that does not resolve (retrying will not help within a run)."""
    text = f"{exc} {exc.__cause__ or ''}".casefold()
    return any(marker in text for marker in _NAME_ERRORS)


def _network_problem(exc: httpx.HTTPError, timeout: float, scrubbed: Callable[[str], str]) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer within {timeout:g} s ({type(exc).__name__})"
    detail = scrubbed(str(exc).strip())[:200]
    return f"cannot connect ({type(exc).__name__}{': ' + detail if detail else ''})"
