"""Skype for Business Server / Lync Server 2013: S2S OAuth objects managed with the Cs* cmdlets.

Kinds: OAuthConfiguration (the global singleton), OAuthServer, PartnerApplication.
What the cmdlets cannot change in place (see Microsoft's Set-Cs* syntax) is declared on the fields,
so the planner replaces exactly where the seed scripts Remove + New by hand.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from reconciler.changes import Change
from reconciler.commands import Command, CommandResult, Transport
from reconciler.errors import DiscoveryError, FieldProblem
from reconciler.kinds.spec import FieldSpec, KindSpec
from reconciler.model import (
    DesiredResource,
    Ensure,
    JSONValue,
    LiveResource,
    LiveState,
    ResourceKey,
    TargetSpec,
)
from reconciler.providers.base import CheckSpec, ServiceIdentity, TrustEdge
from reconciler.providers.common import (
    BOOLEAN,
    GUID,
    URL,
    certificate_thumbprint,
    lifecycle_commands,
    resource_schema,
)

# manifest field (camelCase) -> cmdlet parameter / property (PascalCase), per kind.
CONFIGURATION_PROPERTIES = {
    "serviceName": "ServiceName",
    "realm": "Realm",
    "exchangeAutodiscoverUrl": "ExchangeAutodiscoverUrl",
    "exchangeAutodiscoverAllowedDomains": "ExchangeAutodiscoverAllowedDomains",
    "clientAuthorizationOAuthServerIdentity": "ClientAuthorizationOAuthServerIdentity",
}
OAUTH_SERVER_PROPERTIES = {
    "metadataUrl": "MetadataUrl",
    "realm": "Realm",
    "type": "Type",
    "acceptSecurityIdentifierInformation": "AcceptSecurityIdentifierInformation",
    "authorizationUriOverride": "AuthorizationUriOverride",
}
PARTNER_APPLICATION_PROPERTIES = {
    "applicationIdentifier": "ApplicationIdentifier",
    "realm": "Realm",
    "applicationTrustLevel": "ApplicationTrustLevel",
    "enabled": "Enabled",
    "acceptSecurityIdentifierInformation": "AcceptSecurityIdentifierInformation",
    "metadataUrl": "MetadataUrl",
    "useOAuthServer": "UseOAuthServer",
    "certificateRawData": "CertificateRawData",
}
# How a partner application authenticates: the New-CsPartnerApplication parameter sets.
PARTNER_APPLICATION_FORMS = ("metadataUrl", "useOAuthServer", "certificateRawData")

GLOBAL = "Global"
_DER = Encoding.DER

_OAUTH_CONFIGURATION = KindSpec(
    kind="OAuthConfiguration",
    singleton=True,
    after=("OAuthServer", "PartnerApplication"),
    description="The global CsOAuthConfiguration (Set-CsOAuthConfiguration). Fields left out are not managed.",
    fields={
        "serviceName": FieldSpec("serviceName", ignore_case=True),
        "realm": FieldSpec("realm", ignore_case=True),
        "exchangeAutodiscoverUrl": FieldSpec("exchangeAutodiscoverUrl", ignore_case=True),
        "exchangeAutodiscoverAllowedDomains": FieldSpec("exchangeAutodiscoverAllowedDomains", ignore_case=True),
        "clientAuthorizationOAuthServerIdentity": FieldSpec(
            "clientAuthorizationOAuthServerIdentity", ignore_case=True),
    },
    schema=resource_schema(
        "OAuthConfiguration",
        {
            "identity": {"type": "string", "pattern": "^[Gg][Ll][Oo][Bb][Aa][Ll]$",
                         "errorMessage": "must be Global (there is one OAuth configuration)"},
            "serviceName": {**GUID, "description": "Always 00000004-0000-0ff1-ce00-000000000000 for Skype."},
            "realm": {"type": "string", "minLength": 1,
                      "description": "Omit to leave unmanaged (the server defaults it to the organization FQDN)."},
            "exchangeAutodiscoverUrl": URL,
            "exchangeAutodiscoverAllowedDomains": {"type": "string"},
            "clientAuthorizationOAuthServerIdentity": {"type": "string"},
        },
        description="Skype for Business global OAuth configuration.",
        identity_required=False,
    ),
)

_OAUTH_SERVER = KindSpec(
    kind="OAuthServer",
    description="A CsOAuthServer: an authorization server (for example microsoft.sts, Office 365's ACS).",
    fields={
        "metadataUrl": FieldSpec(
            "metadataUrl", ignore_case=True, metadata_url=True,
            replace_reason="the OAuth server's MetadataUrl differs; Microsoft's hybrid script removes and "
                           "re-creates the server (New-CsOAuthServer downloads the new document)"),
        "realm": FieldSpec("realm", ignore_case=True,
                           replace_reason="Realm cannot be changed by Set-CsOAuthServer"),
        "type": FieldSpec("type", ignore_case=True),
        "acceptSecurityIdentifierInformation": FieldSpec("acceptSecurityIdentifierInformation"),
        "authorizationUriOverride": FieldSpec("authorizationUriOverride", ignore_case=True),
    },
    schema=resource_schema(
        "OAuthServer",
        {
            "metadataUrl": URL,
            "realm": {"type": "string", "minLength": 1},
            "type": {"type": "string", "minLength": 1},
            "acceptSecurityIdentifierInformation": BOOLEAN,
            "authorizationUriOverride": URL,
        },
        description="Skype for Business OAuth server (New-CsOAuthServer).",
        required_when_present=("metadataUrl",),
    ),
)


def _form(fields: Mapping[str, JSONValue]) -> str | None:
    if fields.get("metadataUrl"):
        return "metadataUrl"
    if fields.get("useOAuthServer"):
        return "useOAuthServer"
    if fields.get("certificateRawData"):
        return "certificateRawData"
    return None


_FORM_NAMES = {"metadataUrl": "MetadataUrl", "useOAuthServer": "UseOAuthServer",
               "certificateRawData": "CertificateRawData"}


def _partner_form_change(desired: Mapping[str, JSONValue], live: Mapping[str, JSONValue]) -> str | None:
    want, have = _form(desired), _form(live)
    if want is None or have is None or want == have:
        return None
    return (f"Set-CsPartnerApplication cannot switch a partner application from the {_FORM_NAMES[have]} "
            f"parameter set to {_FORM_NAMES[want]}")


def _read_certificate(data: bytes) -> x509.Certificate:
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def _prepare_partner_application(fields: dict[str, JSONValue], manifest_dir: Path) -> dict[str, JSONValue]:
    """Read a declared certificate file (DER or PEM) into base64 DER, and check raw data parses.

    The file is read here, on the machine running reconcile, and sent as CertificateRawData:
    -CertificateFileData would name a path on the remote server.
    """
    out = dict(fields)
    if "certificateFile" in out:
        path = Path(str(out.pop("certificateFile")))
        full = path if path.is_absolute() else manifest_dir / path
        try:
            cert = _read_certificate(full.read_bytes())
        except OSError as exc:
            raise FieldProblem("certificateFile", f"cannot read certificate file {str(path)!r}: "
                                                  f"{exc.strerror or exc}") from None
        except ValueError:
            raise FieldProblem("certificateFile", f"{str(path)!r} is not an X.509 certificate "
                                                  "(expected a .cer file in DER or PEM)") from None
        out["certificateRawData"] = base64.b64encode(cert.public_bytes(_DER)).decode("ascii")
    elif "certificateRawData" in out:
        raw = "".join(str(out["certificateRawData"]).split())
        try:
            cert = x509.load_der_x509_certificate(base64.b64decode(raw, validate=True))
        except (ValueError, binascii.Error):
            raise FieldProblem("certificateRawData",
                               "is not a base64-encoded DER X.509 certificate") from None
        out["certificateRawData"] = base64.b64encode(cert.public_bytes(_DER)).decode("ascii")
    return out


_FORM_RULES: tuple[dict[str, Any], ...] = (
    {
        "if": {"not": {"properties": {"ensure": {"const": "absent"}}, "required": ["ensure"]}},
        "then": {
            "oneOf": [{"required": ["metadataUrl"]}, {"required": ["useOAuthServer"]},
                      {"required": ["certificateFile"]}, {"required": ["certificateRawData"]}],
            "errorMessage": "a partner application needs exactly one of: metadataUrl | "
                            "applicationIdentifier + useOAuthServer | applicationIdentifier + certificateFile "
                            "+ realm | applicationIdentifier + certificateRawData + realm",
        },
    },
    {
        "if": {"required": ["metadataUrl"]},
        "then": {"not": {"required": ["realm"]},
                 "errorMessage": "realm cannot be set together with metadataUrl "
                                 "(the realm comes from the metadata document)"},
    },
    {
        "if": {"anyOf": [{"required": ["useOAuthServer"]}, {"required": ["certificateFile"]},
                         {"required": ["certificateRawData"]}]},
        "then": {"required": ["applicationIdentifier"]},
    },
    {
        "if": {"anyOf": [{"required": ["certificateFile"]}, {"required": ["certificateRawData"]}]},
        "then": {"required": ["realm"]},
    },
)

_PARTNER_APPLICATION = KindSpec(
    kind="PartnerApplication",
    after=("OAuthServer",),
    description="A CsPartnerApplication: a server Skype trusts to issue tokens (Exchange, SharePoint).",
    fields={
        "applicationIdentifier": FieldSpec(
            "applicationIdentifier", ignore_case=True,
            replace_reason="ApplicationIdentifier cannot be changed by Set-CsPartnerApplication"),
        "realm": FieldSpec("realm", ignore_case=True,
                           replace_reason="Realm cannot be changed by Set-CsPartnerApplication"),
        "applicationTrustLevel": FieldSpec("applicationTrustLevel", ignore_case=True),
        "enabled": FieldSpec("enabled"),
        "acceptSecurityIdentifierInformation": FieldSpec("acceptSecurityIdentifierInformation"),
        "metadataUrl": FieldSpec("metadataUrl", ignore_case=True, metadata_url=True),
        "useOAuthServer": FieldSpec("useOAuthServer"),
        "certificateRawData": FieldSpec("certificateRawData", display=certificate_thumbprint),
    },
    replace_when=_partner_form_change,
    prepare=_prepare_partner_application,
    schema=resource_schema(
        "PartnerApplication",
        {
            "metadataUrl": {**URL, "description": "Create from the partner's metadata document."},
            "applicationIdentifier": {
                **GUID, "description": "With metadataUrl: the identifier expected from the document "
                                       "(a live app with another one is replaced, as the seed scripts do)."},
            "useOAuthServer": {"const": True, "errorMessage": "must be true when set"},
            "certificateFile": {"type": "string", "minLength": 1,
                                "description": ".cer file (DER or PEM), relative to the manifest."},
            "certificateRawData": {"type": "string", "minLength": 1,
                                   "description": "Base64 DER certificate."},
            "realm": {"type": "string", "minLength": 1},
            "applicationTrustLevel": {"enum": ["Full", "Application", "User"]},
            "enabled": BOOLEAN,
            "acceptSecurityIdentifierInformation": BOOLEAN,
        },
        description="Skype for Business partner application (New-CsPartnerApplication).",
        required_when_present=("applicationTrustLevel",),
        rules=_FORM_RULES,
    ),
)

_DISCOVERY = (
    Command("Get-CsOAuthConfiguration", select=("Identity", *CONFIGURATION_PROPERTIES.values())),
    Command("Get-CsOAuthServer", select=("Identity", *OAUTH_SERVER_PROPERTIES.values())),
    Command("Get-CsPartnerApplication", select=("Identity", *PARTNER_APPLICATION_PROPERTIES.values())),
)

_CMDLET_NOUN = {"OAuthServer": "CsOAuthServer", "PartnerApplication": "CsPartnerApplication",
                "OAuthConfiguration": "CsOAuthConfiguration"}
_PROPERTIES = {"OAuthConfiguration": CONFIGURATION_PROPERTIES, "OAuthServer": OAUTH_SERVER_PROPERTIES,
               "PartnerApplication": PARTNER_APPLICATION_PROPERTIES}


def _live_fields(kind: str, obj: Mapping[str, Any]) -> dict[str, JSONValue]:
    """Map a cmdlet's output object to manifest field names; empty strings read as unset."""
    lowered = {str(k).lower(): v for k, v in obj.items()}
    fields: dict[str, JSONValue] = {}
    for name, prop in _PROPERTIES[kind].items():
        value = lowered.get(prop.lower())
        fields[name] = None if value == "" else value
    return fields


def _ex_storage_commands(args: Mapping[str, Any]) -> tuple[Command, ...]:
    params: dict[str, Any] = {"SipUri": args["sipUri"]}
    if args.get("folder"):
        params["Folder"] = args["folder"]
    if args.get("deleteItem"):
        params["DeleteItem"] = True
    return (Command("Test-CsExStorageConnectivity", params),)


_EX_STORAGE = CheckSpec(
    name="ExStorageConnectivity",
    description="Test-CsExStorageConnectivity: the Storage Service writes an item to the user's Exchange "
                "mailbox over server-to-server OAuth; it works only when both directions of the trust do.",
    schema={
        "type": "object",
        "required": ["sipUri"],
        "properties": {
            "sipUri": {"type": "string", "pattern": r"^sip:[^@\s]+@[^@\s]+$",
                       "errorMessage": "is not a SIP URI (sip:user@domain)"},
            "folder": {"type": "string", "minLength": 1},
            "deleteItem": BOOLEAN,
        },
    },
    commands=_ex_storage_commands,
)


class SkypeProvider:
    """Skype for Business / Lync Server provider (first user of the plugin API)."""

    name = "skype"
    kinds: Mapping[str, KindSpec] = {
        k.kind: k for k in (_OAUTH_SERVER, _PARTNER_APPLICATION, _OAUTH_CONFIGURATION)
    }
    checks: Mapping[str, CheckSpec] = {_EX_STORAGE.name: _EX_STORAGE}

    def identity(self, target: TargetSpec, resources: Sequence[DesiredResource]) -> ServiceIdentity:
        config = next((r.fields for r in resources if r.key.kind == "OAuthConfiguration"), {})
        return ServiceIdentity(target.name, "Skype for Business", _text(config.get("serviceName")),
                               _text(config.get("realm")))

    def trust_edges(self, target: TargetSpec, resources: Sequence[DesiredResource]) -> list[TrustEdge]:
        edges = []
        for r in resources:
            if r.ensure is not Ensure.PRESENT or r.key.kind not in ("PartnerApplication", "OAuthServer"):
                continue
            url = _text(r.fields.get("metadataUrl"))
            line = r.field_lines.get("metadataUrl" if url else "applicationIdentifier", r.location.line)
            where = f"{r.location.file}:{line}"
            via = f"{r.key.kind} {r.key.identity}" + (" (metadataUrl)" if url else " (applicationIdentifier)")
            edges.append(TrustEdge(target.name, r.key.address, via, url,
                                   _text(r.fields.get("applicationIdentifier")), where))
        return edges

    def discover(self, target: TargetSpec, transport: Transport, wanted: Sequence[ResourceKey] = ()) -> LiveState:
        results = transport.invoke(_DISCOVERY, stop_on_error=True)
        failed = [r for r in results if not r.ok]
        if failed or len(results) != len(_DISCOVERY):
            detail = failed[0].error if failed else "the batch returned too few results"
            raise DiscoveryError(f"target {target.name!r}: discovery failed: {detail}")
        resources: dict[ResourceKey, LiveResource] = {}
        for kind, result in zip(("OAuthConfiguration", "OAuthServer", "PartnerApplication"), results,
                                strict=True):
            for obj in _objects(result):
                identity = GLOBAL if kind == "OAuthConfiguration" else str(obj.get("Identity", ""))
                key = ResourceKey(target.name, kind, identity)
                resources[key] = LiveResource(key, _live_fields(kind, obj))
        return LiveState(target.name, resources)

    def commands(self, change: Change) -> tuple[Command, ...]:
        key = change.key
        noun = _CMDLET_NOUN[key.kind]

        def update(after: Mapping[str, JSONValue]) -> Command:
            params: dict[str, Any] = {"Identity": key.identity}
            for name in change.changed:
                params[_PROPERTIES[key.kind][name]] = after.get(name)
            return _command(f"Set-{noun}", params)

        return lifecycle_commands(change, Command(f"Remove-{noun}", {"Identity": key.identity}),
                                  lambda after: self._new(key, after), update)

    def restore_commands(self, live: LiveResource) -> tuple[Command, ...]:
        return (self._new(live.key, live.fields),)

    def _new(self, key: ResourceKey, fields: Mapping[str, JSONValue]) -> Command:
        props = _PROPERTIES[key.kind]
        params: dict[str, Any] = {"Identity": key.identity}
        if key.kind == "PartnerApplication":
            form = _form(fields)
            names: tuple[str, ...] = ("applicationTrustLevel", "enabled", "acceptSecurityIdentifierInformation")
            if form == "metadataUrl":
                names = ("metadataUrl", *names)
            elif form == "useOAuthServer":
                names = ("applicationIdentifier", "useOAuthServer", "realm", *names)
            else:
                names = ("applicationIdentifier", "certificateRawData", "realm", *names)
        else:
            names = tuple(props)
        for name in names:
            value = fields.get(name)
            if value is not None and value != "":
                params[props[name]] = value
        return _command(f"New-{_CMDLET_NOUN[key.kind]}", params)


def _command(cmdlet: str, params: dict[str, Any]) -> Command:
    """A command whose certificate, if any, is shown as its thumbprint rather than base64."""
    shown = {"CertificateRawData": certificate_thumbprint(params["CertificateRawData"])} \
        if params.get("CertificateRawData") else {}
    return Command(cmdlet, params, shown=shown)


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def _objects(result: CommandResult) -> tuple[Mapping[str, Any], ...]:
    return tuple(o for o in result.output if isinstance(o, Mapping))
