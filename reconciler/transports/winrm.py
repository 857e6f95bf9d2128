"""The WinRM transport (`transport: winrm`): PowerShell remoting (PSRP over WS-Management) with pypsrp.

It lets `reconcile` run on a Linux GitOps runner and talk to the remoting endpoints that Skype for
Business Server (`https://<front end>/OcsPowershell`) and Exchange Server (`http://<server>/PowerShell`,
session configuration `Microsoft.Exchange`) publish, or to a plain WinRM listener (`/wsman`).

How commands travel
-------------------
Every command is sent as a *structured* PSRP pipeline: the cmdlet name, then each parameter as a
name and a serialized value (`PowerShell.add_cmdlet(...).add_parameters(...)`), then
`-ErrorAction Stop` so a non-terminating error fails the command, then `Select-Object -Property`
when the command selects properties. No PowerShell text is ever built from a value and no script
is ever sent: these endpoints are constrained (Exchange's runs in NoLanguage mode), so the runner
script the local PowerShell transport uses cannot run there anyway.

What a round trip means here
----------------------------
A restricted endpoint cannot tag which statement produced which output, so each command is its own
pipeline over ONE RunspacePool per target, opened on the first `invoke` and reused for discovery
and apply until `close()` (after a connection failure it is dropped and the next `invoke` opens
a new one). The `Transport` contract's "one round trip per batch" is therefore kept
in spirit, not in packets:

* a batch made only of `Get-*` commands (discovery) starts every pipeline (`begin_invoke`) before
  collecting any (`end_invoke`), so the cmdlets run concurrently in the pool's runspaces (up to
  `maxRunspaces`) and the wall time is about that of the slowest one plus a few small WS-Management
  requests per command (Command, Receive, Signal) - not one HTTP request;
* any other batch runs its commands one after another, each waiting for the previous one, and with
  `stop_on_error` stops at the first failure (nothing after it is sent).

With `stop_on_error`, the results of a concurrent read batch are cut after the first failing
command, as the contract says, even though the later reads did run (reads change nothing).

Native commands (executables such as `iisreset`)
------------------------------------------------
Exchange's endpoint (configuration `Microsoft.Exchange`) is restricted and runs no executables, and
the IIS-hosted paths (/PowerShell, /OcsPowershell) host only their own configuration. So a native
command runs over a SECOND RunspacePool, opened on the first native command, on the same server's
WinRM listener (`/wsman`; the same port when the main endpoint is /wsman, else 5986 or 5985, or
`nativePort`) with the unrestricted configuration `nativeConfigurationName` (default
`Microsoft.PowerShell`; null or empty disables native commands). Its pipeline is three structured
statements, no script: `Remove-Variable LASTEXITCODE` (so an old exit code can never be read),
the executable with each argument added as one positional argument (`add_argument`), then
`Get-Variable -Name LASTEXITCODE -ValueOnly`. Its output lines become `{"Stream": "Output"|"Error",
"Line": ...}` objects; a non-zero exit code fails the command with a message that gives it.
`unsupported(command)` says, before anything is sent, when a target cannot run a command (native
commands disabled, or a command off the allow-list).

The allow-list
--------------
`restrict_to(names)` limits this transport to those commands (case-insensitive) plus the target's
`allowCmdlets`; anything else is refused with nothing sent. Until it is called, cmdlets are not
limited here (the endpoint's own role-based access control applies), and executables must be on the
pwsh transport's default list or in `allowCmdlets`.

Parameter values: `None` travels as PSRP null (the server cannot tell it from a switch given
without a value), tuples as lists, `True`/`False` as booleans (switches are sent as `True`).

A piped command (`Command.pipe`: Set-SPAppPrincipalPermission taking the SPAppPrincipal that
Get-SPAppPrincipal writes) is run in two pipelines: its source alone first, whose output objects are
counted (a failure, or other than exactly one object, fails the command and nothing more is sent), then
`<source> ... | Select-Object -First 1 | <cmdlet> ...` as one structured pipeline, so the object is bound
on the server by PowerShell's pipeline binding (by value) and never crosses the wire. The source runs
twice; an object that vanished in between would leave the cmdlet unrun without an error (not guarded).

Results: each output object becomes a plain dict of its properties (adapted and extended, i.e.
note properties added by `Select-Object`); enums become their name, date-times ISO 8601 text, GUIDs
and nested objects their text. With a selection, exactly the selected properties are kept (a
missing one reads as None); without, the `PSComputerName`, `RunspaceId` and `PSShowComputerName`
properties that remoting adds are dropped. A PowerShell error becomes a failed CommandResult
(`"<cmdlet> : <message>"`); a connection, authentication, TLS or protocol failure becomes a
TransportError naming the server, port and authentication method, never a credential.

Credentials come from environment variables or a private credential file, never from the manifest,
and never appear in errors or reprs. pypsrp is imported only when this transport is used: install
it with `pip install 's2s-trust-reconciler[winrm]'`.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import logging
import os
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, Protocol

from reconciler.commands import pipe_count_error
from reconciler.errors import TransportError
from reconciler.model import TargetSpec
from reconciler.transports.base import MASK, Command, CommandResult, Sensitive, check_private, send_unrefused
from reconciler.transports.psjson import NATIVE_NAME

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 's2s-trust-reconciler[winrm]'"
DEFAULT_USERNAME_ENV = "RECONCILE_WINRM_USERNAME"
DEFAULT_PASSWORD_ENV = "RECONCILE_WINRM_PASSWORD"
DEFAULT_CONFIGURATION = "Microsoft.PowerShell"
DEFAULT_NATIVE_CONFIGURATION = DEFAULT_CONFIGURATION
"""The session configuration native commands run in: an unrestricted one (FullLanguage, applications allowed)."""
NATIVE_MAX_RUNSPACES = 1
DEFAULT_OPERATION_TIMEOUT = 20
DEFAULT_READ_TIMEOUT = 30.0
DEFAULT_MAX_RUNSPACES = 3
AUTH_METHODS = ("negotiate", "kerberos", "ntlm", "certificate", "basic", "credssp")
PASSWORD_AUTHS = frozenset({"ntlm", "basic", "credssp"})
"""Methods that cannot work without a username and password (negotiate and kerberos can use a ticket cache)."""
REMOTING_PROPERTIES = frozenset({"pscomputername", "runspaceid", "psshowcomputername"})
"""Note properties PowerShell remoting adds to every output object."""

_CMDLET = re.compile(r"^[A-Za-z]+-[A-Za-z0-9]+$")
_PARAMETER = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PATH_PATTERN = r"^/?[A-Za-z0-9._~-]+(/[A-Za-z0-9._~-]+)*/?$"
_PATH = re.compile(_PATH_PATTERN)
_I32 = (-(2**31), 2**31 - 1)
_BASIC_NEEDS_TLS = "is not allowed with auth: basic (Basic sends the password unencrypted without TLS)"
_CERTIFICATE_NEEDS_TLS = "is not allowed with auth: certificate (it needs TLS)"


@dataclass(frozen=True)
class WinRMSettings:
    """A target's resolved connection settings. Its repr shows the username, never the password."""

    server: str
    port: int | None = None
    ssl: bool = True
    path: str = "wsman"
    configuration_name: str = DEFAULT_CONFIGURATION
    auth: str = "negotiate"
    certificate_validation: bool = True
    ca_bundle: str | None = None
    username: str | None = None
    password: Sensitive | None = field(default=None, repr=False)
    certificate_pem: str | None = None
    certificate_key_pem: str | None = None
    operation_timeout: int = DEFAULT_OPERATION_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT
    max_runspaces: int = DEFAULT_MAX_RUNSPACES
    native_configuration_name: str | None = DEFAULT_NATIVE_CONFIGURATION
    """Where native commands run; None: they are disabled."""
    native_port: int | None = None
    allow_cmdlets: tuple[str, ...] = ()

    def native_settings(self) -> WinRMSettings | None:
        """The connection native commands use: the same server and credentials, the /wsman listener
        (the same port when this endpoint is /wsman, else the default one or `native_port`), and the
        unrestricted configuration. None when native commands are disabled."""
        if not self.native_configuration_name:
            return None
        same_listener = self.path.strip("/").lower() == "wsman"
        port = self.native_port if self.native_port is not None else (self.port if same_listener else None)
        return replace(self, path="wsman", port=port, configuration_name=self.native_configuration_name,
                       max_runspaces=NATIVE_MAX_RUNSPACES)

    @property
    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        return 5986 if self.ssl else 5985

    @property
    def endpoint(self) -> str:
        scheme = "https" if self.ssl else "http"
        return f"{scheme}://{self.server}:{self.effective_port}/{self.path.lstrip('/')}"

    @property
    def where(self) -> str:
        """`server:port (auth)`, the way every error names the connection."""
        return f"{self.server}:{self.effective_port} ({self.auth})"

    @property
    def cert_validation(self) -> bool | str:
        """pypsrp's `cert_validation`: False, the CA bundle path, or True (the system store)."""
        if not self.certificate_validation:
            return False
        return self.ca_bundle if self.ca_bundle else True

    def wsman_arguments(self) -> dict[str, Any]:
        """Keyword arguments for `pypsrp.wsman.WSMan` (they include the password: never log them)."""
        arguments: dict[str, Any] = {
            "server": self.server,
            "port": self.effective_port,
            "ssl": self.ssl,
            "path": self.path,
            "auth": self.auth,
            "cert_validation": self.cert_validation,
            "operation_timeout": self.operation_timeout,
            "read_timeout": self.read_timeout,
        }
        if self.auth == "certificate":
            arguments["certificate_pem"] = self.certificate_pem
            arguments["certificate_key_pem"] = self.certificate_key_pem
        else:
            arguments["username"] = self.username
            arguments["password"] = self.password.reveal() if self.password is not None else None
        return arguments


class RunspacePoolLike(Protocol):
    """What the transport itself calls on a pool; pipelines are `pypsrp.powershell.PowerShell(pool)`."""

    def open(self) -> None: ...

    def close(self) -> None: ...


PoolFactory = Callable[[WinRMSettings], RunspacePoolLike]


# ---------------------------------------------------------------------------------------------
# pypsrp, imported only when used


def _pypsrp() -> tuple[ModuleType, ModuleType]:
    """`pypsrp.wsman` and `pypsrp.powershell`, or a TransportError saying how to install them."""
    try:
        from pypsrp import powershell, wsman
    except ImportError:
        raise TransportError(f"transport 'winrm' needs the pypsrp package, which is not installed: "
                             f"{INSTALL_HINT}") from None
    return wsman, powershell


def pypsrp_pool(settings: WinRMSettings) -> RunspacePoolLike:
    """The real pool: one `WSMan` connection and one `RunspacePool` over it (not opened yet)."""
    wsman, powershell = _pypsrp()
    try:
        connection = wsman.WSMan(**settings.wsman_arguments())
    except ValueError as exc:  # pypsrp's own check of the combination of settings
        raise TransportError(f"winrm {settings.where}: {_scrub(str(exc), settings)}") from None
    pool: RunspacePoolLike = powershell.RunspacePool(
        connection, configuration_name=settings.configuration_name, max_runspaces=settings.max_runspaces)
    return pool


# ---------------------------------------------------------------------------------------------
# Settings from a target's connection block


def settings_from_connection(connection: Mapping[str, Any], *, target: str = "?",
                             environ: Mapping[str, str] | None = None,
                             base: Path | None = None) -> WinRMSettings:
    """Check a `connection` block (its `transport` key is ignored) and read the credentials it names.

    Relative paths are resolved against `base` (default: the working directory). Raises
    TransportError naming the target and field; no message contains a credential.
    """
    environ = os.environ if environ is None else environ
    base = Path.cwd() if base is None else base
    unknown = sorted(set(connection) - set(WinRMTransport.connection_schema["properties"]) - {"transport"})
    if unknown:
        raise TransportError(f"target {target!r}: unknown winrm connection setting(s): {', '.join(unknown)}")

    def problem(name: str, message: str) -> TransportError:
        return TransportError(f"target {target!r}: connection.{name} {message}")

    def text(name: str, default: str | None = None) -> str | None:
        value = connection.get(name, default)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise problem(name, "must be a non-empty string")
        return value

    def flag(name: str, default: bool) -> bool:
        value = connection.get(name, default)
        if not isinstance(value, bool):
            raise problem(name, "must be true or false")
        return value

    def number(name: str, default: float | None, *, integer: bool, low: float) -> float | None:
        value = connection.get(name, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or (integer and not isinstance(value, int)):
            raise problem(name, "must be an integer" if integer else "must be a number")
        if value < low:
            raise problem(name, f"must be at least {low:g}")
        return value

    def path(name: str) -> str | None:
        value = text(name)
        return None if value is None else str(base / value)

    server = text("server")
    if server is None:
        raise problem("server", "is required (the host name of the remoting endpoint)")
    if "/" in server or any(c.isspace() for c in server.strip()):
        raise problem("server", "must be a host name only (set ssl, port and path separately)")
    endpoint_path = text("path", "wsman") or "wsman"
    if not _PATH.match(endpoint_path):
        raise problem("path", "must be a URL path such as OcsPowershell, PowerShell or wsman")
    port = number("port", None, integer=True, low=1)
    if port is not None and port > 65535:
        raise problem("port", "must be at most 65535")
    ssl = flag("ssl", True)
    auth = text("auth", "negotiate")
    if auth not in AUTH_METHODS:
        raise problem("auth", f"must be one of {', '.join(AUTH_METHODS)}")
    if auth == "basic" and not ssl:
        raise problem("ssl", "must be true with auth: basic (Basic sends the password unencrypted without TLS)")
    validation = flag("certificateValidation", True)
    ca_bundle = path("caBundle")
    if ca_bundle is not None and not validation:
        raise problem("caBundle", "makes no sense with certificateValidation: false")
    if ca_bundle is not None and not Path(ca_bundle).is_file():
        raise problem("caBundle", f"names no readable file: {ca_bundle}")
    operation_timeout = number("operationTimeout", DEFAULT_OPERATION_TIMEOUT, integer=True, low=1)
    read_timeout = number("readTimeout", DEFAULT_READ_TIMEOUT, integer=False, low=1)
    assert operation_timeout is not None and read_timeout is not None
    if read_timeout <= operation_timeout:
        raise problem("readTimeout", f"must be longer than operationTimeout ({operation_timeout:g} s): the server "
                                     "holds a Receive open that long before answering")
    max_runspaces = number("maxRunspaces", DEFAULT_MAX_RUNSPACES, integer=True, low=1)
    assert max_runspaces is not None
    native_configuration = connection.get("nativeConfigurationName", DEFAULT_NATIVE_CONFIGURATION)
    if native_configuration is not None and not isinstance(native_configuration, str):
        raise problem("nativeConfigurationName", "must be a session configuration name (such as "
                                                 f"{DEFAULT_NATIVE_CONFIGURATION}), or null to disable native commands")
    native_configuration = (native_configuration or "").strip() or None
    native_port = number("nativePort", None, integer=True, low=1)
    if native_port is not None and native_port > 65535:
        raise problem("nativePort", "must be at most 65535")
    if native_port is not None and native_configuration is None:
        raise problem("nativePort", "makes no sense with native commands disabled (nativeConfigurationName: null)")
    allow_cmdlets = connection.get("allowCmdlets", [])
    if not isinstance(allow_cmdlets, list) or not all(isinstance(n, str) and NATIVE_NAME.match(n)
                                                      for n in allow_cmdlets):
        raise problem("allowCmdlets", "must be a list of cmdlet names (Verb-Noun) or executable names (e.g. iisreset)")

    certificate_pem = path("certificatePem")
    certificate_key_pem = path("certificateKeyPem")
    username: str | None = None
    password: Sensitive | None = None
    if auth == "certificate":
        if not ssl:
            raise problem("ssl", "must be true with auth: certificate")
        if certificate_pem is None or certificate_key_pem is None:
            raise TransportError(f"target {target!r}: auth: certificate needs connection.certificatePem and "
                                 "connection.certificateKeyPem")
        if not Path(certificate_pem).is_file():
            raise problem("certificatePem", f"names no readable file: {certificate_pem}")
        check_private(Path(certificate_key_pem), f"target {target!r}: connection.certificateKeyPem")
        for name in ("credentialFile", "usernameEnv", "passwordEnv"):
            if name in connection:
                raise problem(name, "is not used with auth: certificate (the client certificate is the credential)")
    else:
        for name in ("certificatePem", "certificateKeyPem"):
            if name in connection:
                raise problem(name, "is only used with auth: certificate")
        username, password = _credentials(connection, auth, environ, target, path("credentialFile"))

    return WinRMSettings(
        server=server.strip(),
        port=None if port is None else int(port),
        ssl=ssl,
        path=endpoint_path,
        configuration_name=text("configurationName", DEFAULT_CONFIGURATION) or DEFAULT_CONFIGURATION,
        auth=auth,
        certificate_validation=validation,
        ca_bundle=ca_bundle,
        username=username,
        password=password,
        certificate_pem=certificate_pem,
        certificate_key_pem=certificate_key_pem,
        operation_timeout=int(operation_timeout),
        read_timeout=float(read_timeout),
        max_runspaces=int(max_runspaces),
        native_configuration_name=native_configuration,
        native_port=None if native_port is None else int(native_port),
        allow_cmdlets=tuple(allow_cmdlets),
    )


def _credentials(connection: Mapping[str, Any], auth: str, environ: Mapping[str, str], target: str,
                 credential_file: str | None) -> tuple[str | None, Sensitive | None]:
    """Username and password from the credential file, or else from the named environment variables."""
    if credential_file is not None:
        if "usernameEnv" in connection or "passwordEnv" in connection:
            raise TransportError(f"target {target!r}: use either connection.credentialFile or "
                                 "connection.usernameEnv/passwordEnv, not both")
        return read_credential_file(Path(credential_file))
    names = {}
    for key, default in (("usernameEnv", DEFAULT_USERNAME_ENV), ("passwordEnv", DEFAULT_PASSWORD_ENV)):
        name = connection.get(key, default)
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            raise TransportError(f"target {target!r}: connection.{key} must be the name of an environment variable")
        names[key] = name
    user_var, password_var = names["usernameEnv"], names["passwordEnv"]
    user = environ.get(user_var) or None
    secret = environ.get(password_var) or None
    explicit = [connection[k] for k in ("usernameEnv", "passwordEnv") if k in connection]
    missing = [n for n, v in ((user_var, user), (password_var, secret)) if v is None]
    if missing and (explicit or (user is None) != (secret is None) or auth in PASSWORD_AUTHS):
        raise TransportError(
            f"target {target!r}: auth {auth} needs a username and password: set the environment variable(s) "
            f"{' and '.join(missing)} (or use connection.credentialFile)"
            + ("" if auth in PASSWORD_AUTHS else "; with negotiate/kerberos and no variables set at all, "
                                                  "a Kerberos ticket (kinit) is used instead"))
    return user, (Sensitive(secret) if secret is not None else None)




def read_credential_file(path: Path) -> tuple[str, Sensitive]:
    """`username=...` and `password=...` lines (blank lines and `#` comments ignored).

    Refused when group or others may read or write it. Errors name the file and line, never a value.
    """
    check_private(path, "credential file")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise TransportError(f"credential file: cannot read {path} ({type(exc).__name__})") from None
    found: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, sep, value = stripped.partition("=")
        key = key.strip().lower()
        if not sep or key not in ("username", "password"):
            raise TransportError(f"credential file {path}:{number}: expected a `username=...` or `password=...` line")
        if key in found:
            raise TransportError(f"credential file {path}:{number}: {key} is given twice")
        found[key] = value.strip()
    if not found.get("username") or not found.get("password"):
        raise TransportError(f"credential file {path}: needs both a username=... and a password=... line")
    return found["username"], Sensitive(found["password"])


# ---------------------------------------------------------------------------------------------
# Commands -> pypsrp pipelines


def _parameter_value(value: Any) -> Any:
    """A Command parameter value as pypsrp should serialize it (never as text to be parsed)."""
    if isinstance(value, tuple | list):
        return [_parameter_value(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _parameter_value(v) for k, v in value.items()}
    if isinstance(value, int) and not isinstance(value, bool) and not _I32[0] <= value <= _I32[1]:
        from pypsrp.serializer import TaggedValue
        return TaggedValue("I64", value)
    if isinstance(value, float):
        from pypsrp.serializer import TaggedValue
        return TaggedValue("Db", value)
    return value


def check_names(command: Command) -> None:
    """Cmdlet, parameter and selected property names are identifiers (they come from providers).

    A native command: an executable name (no path), string arguments, no parameters, no selection.
    """
    if command.native:
        if not NATIVE_NAME.match(command.cmdlet):
            raise ValueError(f"not an executable name: {command.cmdlet!r}")
        if command.parameters or command.select:
            raise ValueError(f"{command.cmdlet}: a native command takes positional arguments only")
        if not all(isinstance(argument, str) for argument in command.arguments):
            raise ValueError(f"{command.cmdlet}: every argument of a native command must be a string")
        return
    if not _CMDLET.match(command.cmdlet):
        raise ValueError(f"not a cmdlet name: {command.cmdlet!r}")
    bad = [name for name in (*command.parameters, *command.select) if not _PARAMETER.match(name)]
    if command.pipe is not None:
        bad += [name for name in (command.pipe.parameter,) if not _PARAMETER.match(name)]
        check_names(command.pipe.source)
    if bad:
        raise ValueError(f"{command.cmdlet}: not parameter or property names: {bad!r}")


def build_pipeline(powershell_class: Any, pool: Any, command: Command) -> Any:
    """One structured pipeline: `<cmdlet> -Param value ... -ErrorAction Stop [| Select-Object -Property ...]`.

    Names are checked; values are passed as objects for pypsrp to serialize. Nothing here
    produces PowerShell source text.
    """
    check_names(command)
    if command.native:
        raise ValueError(f"{command.cmdlet}: a native command is built by build_native_pipeline")
    ps = powershell_class(pool)
    if command.pipe is not None:
        # `<source> ... -ErrorAction Stop | Select-Object -First 1 | <cmdlet> ...`: the source's object is bound to
        # the pipe's parameter by PowerShell's pipeline binding (it accepts pipeline input by value), on the server.
        # The transport has counted the source's objects just before (exactly one, or this is never sent).
        _add_cmdlet(ps, command.pipe.source)
        ps.add_cmdlet("Select-Object").add_parameter("First", 1)
    _add_cmdlet(ps, command)
    if command.select:
        ps.add_cmdlet("Select-Object").add_parameter("Property", list(command.select))
    return ps


def _add_cmdlet(ps: Any, command: Command) -> None:
    ps.add_cmdlet(command.cmdlet)
    ps.add_parameters({name: _parameter_value(value) for name, value in command.parameters.items()})
    if not any(name.lower() == "erroraction" for name in command.parameters):
        ps.add_parameter("ErrorAction", "Stop")


def build_native_pipeline(powershell_class: Any, pool: Any, command: Command) -> Any:
    """An executable and its exit code, as three structured statements (no script, no text built):

    `Remove-Variable -Name LASTEXITCODE -Scope Global` (so a stale exit code is never read), then the
    executable with each argument added as one positional argument, then `Get-Variable -Name
    LASTEXITCODE -Scope Global -ValueOnly`, whose value is the pipeline's last output object.
    """
    check_names(command)
    if not command.native:
        raise ValueError(f"{command.cmdlet}: not a native command")
    ps = powershell_class(pool)
    ps.add_cmdlet("Remove-Variable").add_parameters(
        {"Name": "LASTEXITCODE", "Scope": "Global", "ErrorAction": "SilentlyContinue"})
    ps.add_statement()
    ps.add_cmdlet(command.cmdlet)
    for argument in command.arguments:
        ps.add_argument(argument)
    ps.add_statement()
    ps.add_cmdlet("Get-Variable").add_parameters(
        {"Name": "LASTEXITCODE", "Scope": "Global", "ValueOnly": True, "ErrorAction": "SilentlyContinue"})
    return ps


def is_read(command: Command) -> bool:
    return not command.native and command.pipe is None and command.cmdlet.lower().startswith("get-")


# ---------------------------------------------------------------------------------------------
# pypsrp results -> plain data


def _type_names(obj: Any) -> list[str]:
    names = getattr(obj, "types", None) or getattr(obj, "_types", None) or []
    return [str(n) for n in names]


def _object_text(obj: Any) -> str | None:
    """An object's ToString as pypsrp carries it, or None."""
    for attribute in ("to_string", "_to_string"):
        try:
            value = getattr(obj, attribute, None)
        except (KeyError, ValueError):  # pypsrp's own Enum with a value outside its map
            value = None
        if isinstance(value, str):
            return value
    return None


def _is_enum(obj: Any) -> bool:
    types = _type_names(obj)
    return any(t.endswith("System.Enum") for t in types)


def _scalar(value: Any) -> Any:
    """A property value: JSON-friendly scalars and lists; anything richer becomes its text."""
    from pypsrp.complex_objects import ComplexObject

    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, list | tuple | set | frozenset):
        return [_scalar(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _scalar(v) for k, v in value.items()}
    if isinstance(value, ComplexObject):
        text = _object_text(value)
        if text is None and _is_enum(value):
            sets = getattr(value, "property_sets", None) or [getattr(value, "value", None)]
            return sets[0]
        return text if text is not None else (_type_names(value) or [type(value).__name__])[0]
    return str(value)


def output_object(obj: Any, select: Sequence[str] = ()) -> dict[str, Any]:
    """One output object as a plain dict of its properties (only the selected ones, if any)."""
    from pypsrp.complex_objects import GenericComplexObject

    properties: dict[str, Any]
    if isinstance(obj, GenericComplexObject) and not _is_enum(obj) and (obj.adapted_properties
                                                                         or obj.extended_properties):
        properties = {**obj.adapted_properties, **obj.extended_properties}
    elif isinstance(obj, Mapping):
        properties = {str(k): v for k, v in obj.items()}
    else:
        properties = {"Value": obj}
    if select:
        lowered = {str(k).lower(): v for k, v in properties.items()}
        return {name: _scalar(lowered.get(name.lower())) for name in select}
    return {str(k): _scalar(v) for k, v in properties.items() if str(k).lower() not in REMOTING_PROPERTIES}


def error_text(record: Any) -> str:
    """What PowerShell would print for an ErrorRecord: its details message, else its exception's."""
    for attribute in ("details_message",):
        value = getattr(record, attribute, None)
        if isinstance(value, str) and value.strip():
            return value.strip()
    text = _object_text(record)
    if text and text.strip():
        return text.strip()
    exception = getattr(record, "exception", None)
    for source in (getattr(exception, "adapted_properties", None), getattr(exception, "extended_properties", None)):
        if isinstance(source, Mapping) and isinstance(source.get("Message"), str):
            return str(source["Message"]).strip()
    exception_text = _object_text(exception)
    if exception_text:
        return exception_text.strip()
    for attribute in ("message", "fq_error"):
        value = getattr(record, attribute, None)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return "an error without a message"


# ---------------------------------------------------------------------------------------------
# Failures -> messages


def _class_names(exc: BaseException) -> set[str]:
    return {f"{c.__module__}.{c.__qualname__}" for c in type(exc).__mro__}


def _scrub(text: str, settings: WinRMSettings, extra: Iterable[str] = ()) -> str:
    """Replace every credential (and the given sensitive values) by the mask."""
    secrets = [s for s in (settings.password.reveal() if settings.password else None, *extra)
               if isinstance(s, str) and len(s) >= 3]
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def describe_failure(exc: BaseException, settings: WinRMSettings) -> str:
    """A one-line, credential-free explanation of why the endpoint could not be used."""
    names = _class_names(exc)
    where = settings.where
    detail = " ".join(str(exc).split())[:400] or type(exc).__name__
    user = settings.username or "the Kerberos ticket cache user"
    port_hint = ""
    if settings.path.strip("/").lower() != "wsman" and settings.port is None:
        port_hint = (f"; the IIS-hosted /{settings.path.strip('/')} endpoint usually listens on "
                     f"{'443' if settings.ssl else '80'}: set connection.port")
    if "requests.exceptions.SSLError" in names:
        if "certificate verify failed" in detail.lower() or "certificate_verify_failed" in detail.lower():
            trust = f"the CA bundle {settings.ca_bundle}" if settings.ca_bundle else "the system's trusted CAs"
            message = (f"certificate validation failed for {where}: the server's certificate is not trusted "
                       f"by {trust}; set connection.caBundle to a PEM file with the CA that issued it ({detail})")
        else:
            message = f"TLS handshake with {where} failed: {detail}"
    elif "pypsrp.exceptions.AuthenticationError" in names:
        message = f"authentication failed for {user} ({settings.auth}) at {settings.endpoint}"
    elif "spnego.exceptions.SpnegoError" in names:
        message = (f"authentication failed for {user} ({settings.auth}) at {settings.endpoint}: {detail} "
                   "(Kerberos needs a ticket (kinit) or credentials, and pypsrp's kerberos extra)")
    elif "pypsrp.exceptions.WinRMTransportError" in names:
        code = getattr(exc, "code", "?")
        message = f"{settings.endpoint} answered HTTP {code} ({settings.auth})"
        if code == 404:
            message += ("; check connection.path (OcsPowershell for Skype for Business, PowerShell for "
                        "Exchange) and connection.port")
        else:
            message += f": {detail}"
    elif "pypsrp.exceptions.WSManFaultError" in names:
        reason = getattr(exc, "reason", None) or detail
        message = f"WinRM fault from {where}: {' '.join(str(reason).split())[:400]}"
    elif "requests.exceptions.Timeout" in names:
        message = f"timed out talking to {where}: {detail}{port_hint}"
    elif "requests.exceptions.ConnectionError" in names or "builtins.OSError" in names:
        message = f"cannot connect to {where}: {detail}{port_hint}"
    elif "pypsrp.exceptions.WinRMError" in names:
        message = f"PowerShell remoting with {where} failed: {detail}"
    else:
        message = f"WinRM with {where} failed: {type(exc).__name__}: {detail}"
    return _scrub(message, settings)


# ---------------------------------------------------------------------------------------------
# The transport


class WinRMTransport:
    """Runs commands over one PowerShell remoting RunspacePool (pypsrp), opened on first use."""

    connection_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "description": "PowerShell remoting over WinRM (pypsrp). Credentials are never written here: they come "
                       "from environment variables (usernameEnv/passwordEnv) or a private credentialFile.",
        "properties": {
            "server": {"type": "string", "minLength": 1,
                       "description": "Host name of the remoting endpoint: a Skype for Business front end "
                                      "(or pool FQDN) or an Exchange server."},
            "port": {"type": "integer", "minimum": 1, "maximum": 65535,
                     "description": "TCP port (default 5986 with ssl, 5985 without). The IIS-hosted Skype and "
                                    "Exchange endpoints listen on 443 (https) and 80 (http)."},
            "ssl": {"type": "boolean", "description": "Use HTTPS (default true)."},
            "path": {"type": "string", "minLength": 1, "pattern": _PATH_PATTERN,
                     "description": "WSMan path (default wsman). Skype for Business: OcsPowershell "
                                    "(https://<front end>/OcsPowershell, port 443). Exchange: PowerShell "
                                    "(http://<server>/PowerShell, port 80, with configurationName "
                                    "Microsoft.Exchange and Kerberos)."},
            "configurationName": {"type": "string", "minLength": 1,
                                  "description": "PSSession configuration: Microsoft.Exchange for Exchange; "
                                                 "default Microsoft.PowerShell."},
            "auth": {"enum": list(AUTH_METHODS),
                     "description": "Authentication (default negotiate). basic needs ssl: true; certificate needs "
                                    "certificatePem and certificateKeyPem."},
            "certificateValidation": {"type": "boolean",
                                      "description": "Check the server's TLS certificate (default true)."},
            "caBundle": {"type": "string", "minLength": 1,
                         "description": "PEM file of the CA(s) that issued the server's certificate (an internal "
                                        "enterprise CA), relative to the working directory."},
            "usernameEnv": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$",
                            "description": f"Name of the environment variable holding the username, DOMAIN\\user "
                                           f"or user@REALM (default {DEFAULT_USERNAME_ENV})."},
            "passwordEnv": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$",
                            "description": f"Name of the environment variable holding the password "
                                           f"(default {DEFAULT_PASSWORD_ENV})."},
            "credentialFile": {"type": "string", "minLength": 1,
                               "description": "File with username=... and password=... lines, readable by its "
                                              "owner only (chmod 600); instead of the environment variables."},
            "certificatePem": {"type": "string", "minLength": 1,
                               "description": "Client certificate (PEM) for auth: certificate."},
            "certificateKeyPem": {"type": "string", "minLength": 1,
                                  "description": "Unencrypted private key (PEM, chmod 600) for auth: certificate."},
            "operationTimeout": {"type": "integer", "minimum": 1,
                                 "description": f"WS-Management operation timeout in seconds "
                                                f"(default {DEFAULT_OPERATION_TIMEOUT})."},
            "readTimeout": {"type": "number", "minimum": 1,
                            "description": f"HTTP read timeout in seconds, longer than operationTimeout "
                                           f"(default {DEFAULT_READ_TIMEOUT:g})."},
            "maxRunspaces": {"type": "integer", "minimum": 1, "maximum": 64,
                             "description": f"Runspaces in the pool, i.e. how many reads run at once "
                                            f"(default {DEFAULT_MAX_RUNSPACES})."},
            "nativeConfigurationName": {
                "type": ["string", "null"],
                "description": f"Unrestricted PSSession configuration that native commands (executables such as "
                               f"iisreset) run in, over a second pool on the same server's /wsman listener (default "
                               f"{DEFAULT_NATIVE_CONFIGURATION}); the restricted Microsoft.Exchange endpoint runs "
                               f"no executables. null or empty disables native commands."},
            "nativePort": {"type": "integer", "minimum": 1, "maximum": 65535,
                           "description": "TCP port of the /wsman listener native commands use (default: port when "
                                          "path is wsman, else 5986 with ssl and 5985 without)."},
            "allowCmdlets": {"type": "array", "items": {"type": "string", "pattern": NATIVE_NAME.pattern},
                             "description": "Cmdlets (Verb-Noun) or executables (e.g. iisreset) to allow beyond "
                                            "the commands the installed providers declare."},
        },
        "required": ["server"],
        "additionalProperties": False,
        "allOf": [
            {"if": {"properties": {"auth": {"const": "basic"}}, "required": ["auth"]},
             "then": {"properties": {"ssl": {"const": True, "errorMessage": _BASIC_NEEDS_TLS}}}},
            {"if": {"properties": {"auth": {"const": "certificate"}}, "required": ["auth"]},
             "then": {"required": ["certificatePem", "certificateKeyPem"],
                      "properties": {"ssl": {"const": True, "errorMessage": _CERTIFICATE_NEEDS_TLS}}}},
        ],
    }

    def __init__(self, settings: WinRMSettings, *, pool_factory: PoolFactory | None = None) -> None:
        self.settings = settings
        self._native_settings = settings.native_settings()
        self._pool_factory: PoolFactory = pool_factory or pypsrp_pool
        self._pool: RunspacePoolLike | None = None
        self._native_pool: RunspacePoolLike | None = None
        self._closed = False
        self._lock = threading.Lock()
        self._restricted: frozenset[str] | None = None
        self.pools_opened = 0
        """How many pools this transport opened (one per run, however many batches)."""
        self.native_pools_opened = 0
        """How many pools for native commands it opened (one per run that runs any)."""

    @classmethod
    def from_target(cls, target: TargetSpec) -> WinRMTransport:
        """Build from a target's `connection` block; fails early if pypsrp is missing."""
        _pypsrp()
        return cls(settings_from_connection(target.connection, target=target.name))

    def __repr__(self) -> str:
        return f"WinRMTransport({self.settings.endpoint}, auth={self.settings.auth}, user={self.settings.username})"

    # -- the Transport protocol -----------------------------------------------------------------

    def invoke(self, commands: Sequence[Command], *, stop_on_error: bool = True) -> list[CommandResult]:
        """Run the commands; refused ones (see `unsupported`) fail here without being sent.

        A refused command gets its error result in its place. With `stop_on_error` the commands
        before it run and nothing after it; without, every other command runs.
        """
        with self._lock:
            if self._closed:
                raise TransportError(f"winrm transport to {self.settings.where} is closed")
            if not commands:
                return []
            for command in commands:
                check_names(command)  # a malformed command is a bug upstream: refused before connecting
            refusals: dict[int, CommandResult] = {}
            for index, command in enumerate(commands):
                problem = self._problem(command)
                if problem is not None:
                    refusals[index] = CommandResult(command, ok=False, error=(
                        f"{command.cmdlet} : refused by the winrm transport: {problem}; nothing was sent"))
            return send_unrefused(commands, refusals, stop_on_error, self._run)

    def restrict_to(self, names: Iterable[str]) -> None:
        """Allow exactly these commands (cmdlets or executables, case-insensitive) plus `allowCmdlets`.

        Anything else is refused with nothing sent. Raises ValueError for an entry that is not a
        command name.
        """
        wanted = list(names)
        bad = [name for name in wanted if not isinstance(name, str) or not NATIVE_NAME.match(name)]
        if bad:
            raise ValueError(f"winrm transport to {self.settings.where}: not command names: {bad!r}")
        with self._lock:
            self._restricted = frozenset(name.lower() for name in (*wanted, *self.settings.allow_cmdlets))

    def unsupported(self, command: Command) -> str | None:
        """Why this transport cannot run `command`, as a sentence; None when it can (nothing is sent)."""
        try:
            check_names(command)
        except ValueError as exc:
            return f"the winrm transport cannot run it: {exc}"
        with self._lock:
            return self._problem(command)

    def close(self) -> None:
        """Close the pools (and their HTTP sessions). Safe to call more than once."""
        with self._lock:
            self._closed = True
            pools = [(self._pool, self.settings), (self._native_pool, self._native_settings)]
            self._pool = self._native_pool = None
        for pool, settings in pools:
            if pool is not None and settings is not None:
                _close_pool(pool, settings)

    # -- internals ------------------------------------------------------------------------------

    @staticmethod
    def _powershell_class() -> Any:
        return _pypsrp()[1].PowerShell

    def _problem(self, command: Command) -> str | None:
        """Why `command` must not be sent (a sentence, no value in it); None if it may be."""
        if command.native and self._native_settings is None:
            return self._natives_disabled(command)
        allowed = self._restricted
        if allowed is None and command.native:
            allowed = frozenset(name.lower() for name in self.settings.allow_cmdlets)
        for name in command.all_cmdlets:  # a piped command's source is run too
            if allowed is not None and name.lower() not in allowed:
                kind = "executable" if command.native else "cmdlet"
                return (f"the {kind} {name} is not on the winrm transport's allow-list for "
                        f"{self.settings.server} (add it to connection.allowCmdlets if it is safe to run)")
        return None

    def _natives_disabled(self, command: Command) -> str:
        configuration = self.settings.configuration_name
        if configuration.lower() == "microsoft.exchange":
            endpoint = "connects to the restricted Microsoft.Exchange endpoint, which runs no executables"
        else:
            endpoint = f"connects to the {configuration} session configuration"
        listener = replace(self.settings, path="wsman", port=None)
        return (f"the WinRM target {self.settings.server} {endpoint}, and native commands are disabled "
                f"(connection.nativeConfigurationName is null), so the executable {command.cmdlet} cannot run "
                f"there; set connection.nativeConfigurationName to an unrestricted session configuration such "
                f"as {DEFAULT_NATIVE_CONFIGURATION}, which runs executables over a second connection to "
                f"{listener.endpoint} (connection.nativePort sets another port)")

    def _run(self, commands: Sequence[Command], stop_on_error: bool) -> list[CommandResult]:
        powershell_class = self._powershell_class()
        if len(commands) > 1 and all(is_read(c) for c in commands):
            pool = self._open()
            pipelines = [(c, build_pipeline(powershell_class, pool, c)) for c in commands]
            try:
                results = self._run_concurrently(pipelines)
            except TransportError:
                self._discard(pool)  # the connection may be broken: the next invoke opens a new one
                raise
            if stop_on_error:
                failed = next((i for i, r in enumerate(results) if not r.ok), None)
                if failed is not None:
                    results = results[: failed + 1]
            return results
        return self._run_in_order(commands, stop_on_error, powershell_class)

    def _open(self, *, native: bool = False) -> RunspacePoolLike:
        """The pool for cmdlets, or (with `native`) the one for native commands; opened on first use."""
        existing = self._native_pool if native else self._pool
        if existing is not None:
            return existing
        settings = self._native_settings if native else self.settings
        assert settings is not None, "native commands are refused before a pool is opened for them"
        pool = self._pool_factory(settings)
        try:
            pool.open()
        except Exception as exc:  # anything pypsrp raises means the endpoint is unusable
            with contextlib.suppress(Exception):  # best effort on an already failed pool
                pool.close()
            raise TransportError(describe_failure(exc, settings)) from None
        if native:
            self._native_pool = pool
            self.native_pools_opened += 1
        else:
            self._pool = pool
            self.pools_opened += 1
        return pool

    def _discard(self, pool: RunspacePoolLike) -> None:
        if pool is self._pool:
            self._pool = None
        if pool is self._native_pool:
            self._native_pool = None
        with contextlib.suppress(Exception):  # best effort on a pool that just failed
            pool.close()

    def _call(self, action: Callable[[], Any], settings: WinRMSettings | None = None) -> Any:
        try:
            return action()
        except Exception as exc:  # a pypsrp call failing means the batch was not delivered
            raise TransportError(describe_failure(exc, settings or self.settings)) from None

    def _run_concurrently(self, pipelines: list[tuple[Command, Any]]) -> list[CommandResult]:
        started: list[tuple[Command, Any]] = []
        try:
            for command, ps in pipelines:
                self._call(ps.begin_invoke)
                started.append((command, ps))
            return [self._result(command, ps, self._call(ps.end_invoke)) for command, ps in started]
        finally:
            for _, ps in started:
                _release(ps)

    def _run_in_order(self, commands: Sequence[Command], stop_on_error: bool,
                      powershell_class: Any) -> list[CommandResult]:
        results: list[CommandResult] = []
        for command in commands:
            pool = self._open(native=command.native)
            settings = self._native_settings if command.native else self.settings
            if command.pipe is not None:
                refused = self._count_source(command, pool, powershell_class)
                if refused is not None:
                    results.append(refused)
                    if stop_on_error:
                        break
                    continue
            builder = build_native_pipeline if command.native else build_pipeline
            ps = builder(powershell_class, pool, command)
            try:
                self._call(ps.begin_invoke, settings)
                output = self._call(ps.end_invoke, settings)
                if command.native:
                    result = self._native_result(command, ps, output)
                else:
                    result = self._result(command, ps, output)
            except TransportError:
                self._discard(pool)  # the connection may be broken: the next invoke opens a new one
                raise
            finally:
                _release(ps)
            results.append(result)
            if stop_on_error and not result.ok:
                break
        return results

    def _count_source(self, command: Command, pool: RunspacePoolLike, powershell_class: Any) -> CommandResult | None:
        """Run a piped command's source alone first: its failure, or other than one object, fails the command
        unsent (`pipe_count_error`); None when it wrote exactly one. A remote session cannot hold the object for a
        second pipeline without a variable in script text, so the source runs again in the piped pipeline."""
        assert command.pipe is not None
        source = command.pipe.source
        ps = build_pipeline(powershell_class, pool, source)
        try:
            self._call(ps.begin_invoke)
            result = self._result(source, ps, self._call(ps.end_invoke))
        except TransportError:
            self._discard(pool)
            raise
        finally:
            _release(ps)
        if not result.ok:
            return CommandResult(command, False, error=result.error)
        if len(result.output) != 1:
            return CommandResult(command, False, error=pipe_count_error(command, len(result.output)))
        return None

    def _native_result(self, command: Command, ps: Any, output: Iterable[Any]) -> CommandResult:
        """Output lines (`{"Stream": ..., "Line": ...}`) and the exit code, the pipeline's last object."""
        items = list(output or ())
        code: int | None = None
        if items and (items[-1] is None or (isinstance(items[-1], int) and not isinstance(items[-1], bool))):
            code = items.pop()
        errors = [error_text(e) for e in list(getattr(ps.streams, "error", None) or ())]
        lines = ([{"Stream": "Output", "Line": _line(item)} for item in items]
                 + [{"Stream": "Error", "Line": text} for text in errors])
        objects = tuple(lines)
        if code == 0:
            return CommandResult(command, True, objects)
        if code is None:
            reason = "; ".join(dict.fromkeys(errors)) or "it ran, but left no exit code"
        else:
            tail = [t.strip() for t in errors if t.strip()] or [str(e["Line"]).strip() for e in lines
                                                                 if str(e["Line"]).strip()]
            reason = f"exited with code {code}" + (f": {' / '.join(tail[-3:])}" if tail else "")
        return CommandResult(command, False, objects, error=f"{command.cmdlet} : {_scrub(reason, self.settings)}")

    def _result(self, command: Command, ps: Any, output: Iterable[Any]) -> CommandResult:
        try:
            objects = tuple(output_object(o, command.select) for o in output or ())
        except Exception as exc:  # a malformed object is a protocol problem, not a crash
            raise TransportError(f"{command.cmdlet}: unreadable output from {self.settings.where}: "
                                 f"{type(exc).__name__}") from None
        errors = list(getattr(ps.streams, "error", None) or ())
        if not ps.had_errors and not errors:
            return CommandResult(command, True, objects)
        messages = list(dict.fromkeys(error_text(e) for e in errors)) or ["the pipeline failed"]
        sensitive = [str(v) for k, v in command.parameters.items() if k in command.sensitive and v is not None]
        message = _scrub("; ".join(messages), self.settings, sensitive)
        return CommandResult(command, False, objects, error=f"{command.cmdlet} : {message}")


def _line(item: Any) -> str:
    """One line a native command wrote (pypsrp gives text; anything else is shown as its text)."""
    if isinstance(item, str):
        return item
    if item is None:
        return ""
    value = _scalar(item)
    return value if isinstance(value, str) else str(value)


def _close_pool(pool: RunspacePoolLike, settings: WinRMSettings) -> None:
    try:
        pool.close()
    except Exception as exc:  # closing must not fail a finished run
        log.warning("closing the WinRM pool to %s: %s", settings.where, describe_failure(exc, settings))
    connection = getattr(pool, "connection", None)
    closer = getattr(connection, "close", None)
    if callable(closer):
        try:
            closer()
        except Exception as exc:
            log.warning("closing the WinRM connection to %s: %s", settings.where, describe_failure(exc, settings))


def _release(ps: Any) -> None:
    """Tell the server a finished pipeline can go (pypsrp's PowerShell.close); best effort."""
    with contextlib.suppress(Exception):  # a pipeline that cannot be released is not a failed command
        ps.close()
