"""Skype for Business Server / Lync Server: the documented syntax of the S2S OAuth cmdlets, and the kinds.

Syntax: Microsoft's cmdlet reference, repository MicrosoftDocs/office-docs-powershell, folder
`skype/skype-ps/SkypeForBusiness/` (one page per cmdlet; each `### <Set>` SYNTAX block is a parameter set).
Real output: Microsoft's Skype for Business Server diagnostics, repository onpremdiag/SfBServer, Pester mocks
under `tests/mode/sfbserver/rules/Exchange/` and `tests/mode/sfbserver/rules/Deployment/`:
- Get-CsPartnerApplication returns Identity, AuthToken, Name, ApplicationIdentifier, Realm, ApplicationTrustLevel,
  AcceptSecurityIdentifierInformation, Enabled; the form lives in AuthToken: `Value=<metadata URL>`
  (RDCsPartnerApplication.tests.ps1), a bare URL, or the type name
  `Microsoft.Rtc.Management.WritableConfig.Settings.SSAuth.UseOAuthServer` (RDExchangeAutodiscoverUrl.tests.ps1).
  There is no MetadataUrl, UseOAuthServer or CertificateRawData property.
- Get-CsOAuthServer returns Identity, Name, IssuerIdentifier, Realm, MetadataUrl, AuthorizationUriOverride, Type
  (`Acs` for Office 365's ACS), AcceptSecurityIdentifierInformation (RDTestOAuthServerConfiguration.tests.ps1).
*Unconfirmed*: how AuthToken shows a certificate-based partner application (no public record); we read
`Value=<base64 DER>` and say so in the docs.
"""

from __future__ import annotations

import base64
import binascii
import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reconciler.errors import FieldProblem
from reconciler.kinds.certificates import (
    CERTIFICATE_OF,
    certificate_file,
    certificate_of_schema,
    certificate_of_sources,
    certificate_thumbprint,
    resolve_notice_only,
)
from reconciler.kinds.declaration import CmdletKind, Prop, reads
from reconciler.kinds.schema import GUID, URL
from reconciler.kinds.syntax import boolean, cmdlet, enum_, identity, string, switch
from reconciler.model import JSONValue

DOCS = "MicrosoftDocs/office-docs-powershell: skype/skype-ps/SkypeForBusiness/"
TRUST_LEVELS = ("Full", "Application", "User")
USE_OAUTH_SERVER_TOKEN = "Microsoft.Rtc.Management.WritableConfig.Settings.SSAuth.UseOAuthServer"
"""What Get-CsPartnerApplication shows in AuthToken for an application in the UseOAuthServer set."""

_ID = identity("Identity") + switch("Force", "Confirm", "WhatIf")
_TENANT = [*string("Tenant")]

# --- syntax ---------------------------------------------------------------------------------------

GET_CS_OAUTH_CONFIGURATION = cmdlet(
    "Get-CsOAuthConfiguration", DOCS + "Get-CsOAuthConfiguration.md",
    [*identity("Identity"), *string("Filter", "Tenant"), *switch("LocalStore")],
    {"Identity": "Identity LocalStore Tenant", "Filter": "Filter LocalStore Tenant"}, default_set="Identity")
SET_CS_OAUTH_CONFIGURATION = cmdlet(
    "Set-CsOAuthConfiguration", DOCS + "Set-CsOAuthConfiguration.md",
    [*_ID, *_TENANT, *string("Realm", "ServiceName", "ClientAuthorizationOAuthServerIdentity",
                             "ExchangeAutodiscoverAllowedDomains", "ExchangeAutodiscoverUrl", "AlternateAudienceUrl",
                             "AdditionalAudienceUrls", "Instance"),
     *enum_("ClientAdalAuthOverride", "NoOverride", "Allowed", "Disallowed")],
    {"Identity": "Tenant Realm ServiceName ClientAuthorizationOAuthServerIdentity ExchangeAutodiscoverAllowedDomains "
                 "ExchangeAutodiscoverUrl ClientAdalAuthOverride AlternateAudienceUrl AdditionalAudienceUrls Identity",
     "Instance": "Tenant Instance"},
    common="Force WhatIf Confirm", default_set="Identity")

GET_CS_OAUTH_SERVER = cmdlet(
    "Get-CsOAuthServer", DOCS + "Get-CsOAuthServer.md",
    [*identity("Identity"), *string("Filter", "Tenant"), *switch("LocalStore")],
    {"Identity": "Identity LocalStore Tenant", "Filter": "Filter LocalStore Tenant"}, default_set="Identity")
NEW_CS_OAUTH_SERVER = cmdlet(
    "New-CsOAuthServer", DOCS + "New-CsOAuthServer.md",
    [*_ID, *_TENANT, *switch("InMemory"), *string("MetadataUrl", "Realm", "AuthorizationUriOverride", "Type"),
     *boolean("AcceptSecurityIdentifierInformation")],
    {"MetadataUrl": "Identity MetadataUrl! Confirm Force InMemory Realm Tenant WhatIf "
                    "AcceptSecurityIdentifierInformation AuthorizationUriOverride Type"})
SET_CS_OAUTH_SERVER = cmdlet(
    "Set-CsOAuthServer", DOCS + "Set-CsOAuthServer.md",
    [*_ID, *_TENANT, *string("MetadataUrl", "AuthorizationUriOverride", "Type", "Instance"),
     *boolean("AcceptSecurityIdentifierInformation")],
    {"Identity": "Identity! Confirm Force Instance MetadataUrl Tenant WhatIf AcceptSecurityIdentifierInformation "
                 "AuthorizationUriOverride Type"})
REMOVE_CS_OAUTH_SERVER = cmdlet(
    "Remove-CsOAuthServer", DOCS + "Remove-CsOAuthServer.md", [*_ID, *_TENANT],
    {"Identity": "Identity! Confirm Force Tenant WhatIf"})

GET_CS_PARTNER_APPLICATION = cmdlet(
    "Get-CsPartnerApplication", DOCS + "Get-CsPartnerApplication.md",
    [*identity("Identity"), *string("Filter", "Tenant"), *switch("LocalStore")],
    {"Identity": "Identity LocalStore Tenant", "Filter": "Filter LocalStore Tenant"}, default_set="Identity")
_PARTNER_PARAMETERS = [*_ID, *_TENANT, *switch("InMemory", "UseOAuthServer"),
                       *string("ApplicationIdentifier", "CertificateFileData", "CertificateRawData", "MetadataUrl",
                               "Realm", "Instance"),
                       *enum_("ApplicationTrustLevel", *TRUST_LEVELS),
                       *boolean("AcceptSecurityIdentifierInformation", "Enabled")]
NEW_CS_PARTNER_APPLICATION = cmdlet(
    "New-CsPartnerApplication", DOCS + "New-CsPartnerApplication.md", _PARTNER_PARAMETERS,
    {"UseOAuthServer": "ApplicationIdentifier! ApplicationTrustLevel! UseOAuthServer! Realm",
     "CertificateFileData": "ApplicationIdentifier! ApplicationTrustLevel! CertificateFileData! Realm!",
     "CertificateRawData": "ApplicationIdentifier! ApplicationTrustLevel! CertificateRawData! Realm!",
     "MetadataUrl": "ApplicationTrustLevel! MetadataUrl!"},
    common="Identity AcceptSecurityIdentifierInformation Confirm Enabled Force InMemory Tenant WhatIf")
SET_CS_PARTNER_APPLICATION = cmdlet(
    "Set-CsPartnerApplication", DOCS + "Set-CsPartnerApplication.md", _PARTNER_PARAMETERS,
    {"CertificateFileData": "Identity! CertificateFileData! AcceptSecurityIdentifierInformation ApplicationTrustLevel "
                            "Enabled Tenant",
     "CertificateRawData": "Identity! CertificateRawData! AcceptSecurityIdentifierInformation ApplicationTrustLevel "
                           "Enabled Tenant",
     "Identity": "Identity! AcceptSecurityIdentifierInformation ApplicationTrustLevel Enabled Tenant",
     "UseOAuthServer": "Identity! UseOAuthServer! AcceptSecurityIdentifierInformation ApplicationTrustLevel Enabled "
                       "Tenant",
     "MetadataUrl": "Identity! MetadataUrl! AcceptSecurityIdentifierInformation ApplicationTrustLevel Enabled Tenant",
     "Instance": "Instance"},
    common="Confirm Force WhatIf", default_set="Identity")
REMOVE_CS_PARTNER_APPLICATION = cmdlet(
    "Remove-CsPartnerApplication", DOCS + "Remove-CsPartnerApplication.md", [*_ID, *_TENANT],
    {"Identity": "Identity! Confirm Force Tenant WhatIf"})

TEST_CS_EX_STORAGE_CONNECTIVITY = cmdlet(
    "Test-CsExStorageConnectivity", DOCS + "Test-CsExStorageConnectivity.md",
    [*string("SipUri", "Binding", "HostNameStorageService"), *switch("DeleteItem", "Force", "UseCache"),
     *enum_("Folder", "ConversationHistory", "Inbox", "Dumpster")],
    {"SipUri": "SipUri! Binding DeleteItem Folder Force HostNameStorageService UseCache"})

# --- how Get reports a partner application's form -------------------------------------------------


def _auth_token(obj: Mapping[str, Any]) -> str:
    return str(obj.get("authtoken") or "").strip()


@functools.lru_cache(maxsize=1024)
def _form(token: str) -> tuple[str | None, bool, str | None]:
    """What an AuthToken says, read once per distinct text (many applications share a metadata URL): the metadata URL
    (`Value=https://...`), whether it is `UseOAuthServer`, and the certificate's raw data (any other value)."""
    value = token[len("value="):].strip() if token.casefold().startswith("value=") else token
    url = value if value.casefold().startswith(("https://", "http://")) else None
    use_oauth_server = token.casefold().endswith("useoauthserver")
    certificate = None if not value or url is not None or value.casefold().endswith("useoauthserver") else \
        "".join(value.split())  # unconfirmed: base64 DER
    return url, use_oauth_server, certificate


@reads("AuthToken", "MetadataUrl")
def read_metadata_url(obj: Mapping[str, Any]) -> JSONValue:
    if obj.get("metadataurl"):  # a version that exposes the property directly
        return obj["metadataurl"]
    return _form(_auth_token(obj))[0]


@reads("AuthToken", "UseOAuthServer")
def read_use_oauth_server(obj: Mapping[str, Any]) -> JSONValue:
    if isinstance(obj.get("useoauthserver"), bool):
        return bool(obj["useoauthserver"])
    return _form(_auth_token(obj))[1]


@reads("AuthToken", "CertificateRawData")
def read_certificate(obj: Mapping[str, Any]) -> JSONValue:
    if obj.get("certificaterawdata"):
        return obj["certificaterawdata"]
    return _form(_auth_token(obj))[2]


_TYPE_ALIASES = {"acs": "acs", "microsoftacs": "acs"}


def _types_equal(want: Any, have: Any, desired: Mapping[str, Any]) -> bool:
    """Get-CsOAuthServer reports Office 365's ACS as `Acs`; accept MicrosoftACS (Exchange's word) for it too."""
    def norm(v: Any) -> str:
        text = str(v or "").casefold()
        return _TYPE_ALIASES.get(text, text)
    return norm(want) == norm(have)


# --- manifest preparation ---------------------------------------------------------------------------

def prepare_partner_application(fields: dict[str, JSONValue], manifest_dir: Path) -> dict[str, JSONValue]:
    """Read a declared certificate file (DER or PEM) into base64 DER, and check raw data parses.

    The file is read here, on the machine running reconcile, and sent as CertificateRawData:
    -CertificateFileData would name a path on the remote server.
    """
    if "certificateFile" not in fields and "certificateRawData" not in fields:
        return fields  # most partner applications come from their metadata: no certificate to read
    out = dict(fields)
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    if "certificateFile" in out:
        cert = certificate_file(manifest_dir, str(Path(str(out.pop("certificateFile")))), "certificateFile")
        out["certificateRawData"] = base64.b64encode(cert.public_bytes(Encoding.DER)).decode("ascii")
    elif "certificateRawData" in out:
        raw = "".join(str(out["certificateRawData"]).split())
        try:
            cert = x509.load_der_x509_certificate(base64.b64decode(raw, validate=True))
        except (ValueError, binascii.Error):
            raise FieldProblem("certificateRawData",
                               "is not a base64-encoded DER X.509 certificate") from None
        out["certificateRawData"] = base64.b64encode(cert.public_bytes(Encoding.DER)).decode("ascii")
    return out


_ABSENT = {"not": {"properties": {"ensure": {"const": "absent"}}, "required": ["ensure"]}}

_FORM_RULES: tuple[dict[str, Any], ...] = (
    {
        "if": _ABSENT,
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

# --- kinds ---------------------------------------------------------------------------------------------

OAUTH_CONFIGURATION = CmdletKind(
    kind="OAuthConfiguration",
    description="The global CsOAuthConfiguration (Set-CsOAuthConfiguration). Fields left out are not managed.",
    get=GET_CS_OAUTH_CONFIGURATION, set=SET_CS_OAUTH_CONFIGURATION,
    singleton="Global", new_identity=None,
    after=("OAuthServer", "PartnerApplication"),
    identity_schema={"type": "string", "pattern": "^[Gg][Ll][Oo][Bb][Aa][Ll]$",
                     "errorMessage": "must be Global (there is one OAuth configuration)"},
    props=(
        Prop("serviceName", "ServiceName", ignore_case=True,
             schema={**GUID, "description": "Always 00000004-0000-0ff1-ce00-000000000000 for Skype."}),
        Prop("realm", "Realm", ignore_case=True,
             schema={"type": "string", "minLength": 1,
                     "description": "Omit to leave unmanaged (the server defaults it to the organization FQDN)."}),
        Prop("exchangeAutodiscoverUrl", "ExchangeAutodiscoverUrl", ignore_case=True, schema=URL),
        Prop("exchangeAutodiscoverAllowedDomains", "ExchangeAutodiscoverAllowedDomains", ignore_case=True,
             schema={"type": "string"}),
        Prop("clientAuthorizationOAuthServerIdentity", "ClientAuthorizationOAuthServerIdentity", ignore_case=True,
             schema={"type": "string"}),
        Prop("clientAdalAuthOverride", "ClientAdalAuthOverride", ignore_case=True),
    ),
)

OAUTH_SERVER = CmdletKind(
    kind="OAuthServer",
    description="A CsOAuthServer: an authorization server (for example microsoft.sts, Office 365's ACS).",
    get=GET_CS_OAUTH_SERVER, new=NEW_CS_OAUTH_SERVER, set=SET_CS_OAUTH_SERVER, remove=REMOVE_CS_OAUTH_SERVER,
    required_when_present=("metadataUrl",),
    props=(
        Prop("metadataUrl", "MetadataUrl", ignore_case=True, metadata_url=True, schema=URL),
        Prop("realm", "Realm", ignore_case=True, schema={"type": "string", "minLength": 1}),
        Prop("type", "Type", equal=_types_equal,
             description="As Get-CsOAuthServer reports it (Acs for Office 365's ACS; MicrosoftACS is read as Acs)."),
        Prop("acceptSecurityIdentifierInformation", "AcceptSecurityIdentifierInformation"),
        Prop("authorizationUriOverride", "AuthorizationUriOverride", ignore_case=True, schema=URL),
        Prop("issuerIdentifier", "IssuerIdentifier", parameter=None, manifest=False),
    ),
)

PARTNER_APPLICATION = CmdletKind(
    kind="PartnerApplication",
    description="A CsPartnerApplication: a server Skype trusts to issue tokens (Exchange, SharePoint).",
    get=GET_CS_PARTNER_APPLICATION, new=NEW_CS_PARTNER_APPLICATION, set=SET_CS_PARTNER_APPLICATION,
    remove=REMOVE_CS_PARTNER_APPLICATION,
    after=("OAuthServer",),
    required_when_present=("applicationTrustLevel",),
    rules=_FORM_RULES,
    prepare=prepare_partner_application,
    exclusive=("metadataUrl", "useOAuthServer", "certificateRawData"),
    extra_schema={"certificateFile": {"type": "string", "minLength": 1,
                                      "description": ".cer file (DER or PEM), relative to the manifest."},
                  CERTIFICATE_OF: certificate_of_schema(
                      "A target of this manifest that signs the tokens this application accepts (an Exchange "
                      "organization declaring its AuthCertificate): nothing to change on the pool (Skype re-reads "
                      "a partner's metadata document on its own schedule); the rotation timeline shows it and the "
                      "target is changed after the signing side.")},
    resolve=resolve_notice_only,
    references=certificate_of_sources,
    follows_source=False,
    refresh_note=("Skype for Business re-reads a partner's metadata document on its own schedule; no cmdlet makes it "
                  "refresh, and Microsoft documents no interval: stage the next certificate days ahead."),
    props=(
        Prop("metadataUrl", None, parameter="MetadataUrl", read=read_metadata_url, ignore_case=True,
             metadata_url=True, schema={**URL, "description": "Create from the partner's metadata document."}),
        Prop("applicationIdentifier", "ApplicationIdentifier", ignore_case=True,
             schema={**GUID, "description": "With metadataUrl: the identifier expected from the document "
                                            "(a live app with another one is replaced, as the seed scripts do)."}),
        Prop("useOAuthServer", None, parameter="UseOAuthServer", read=read_use_oauth_server),
        Prop("certificateRawData", None, parameter="CertificateRawData", read=read_certificate,
             display=certificate_thumbprint,
             schema={"type": "string", "minLength": 1, "description": "Base64 DER certificate."}),
        Prop("realm", "Realm", ignore_case=True, schema={"type": "string", "minLength": 1}),
        Prop("applicationTrustLevel", "ApplicationTrustLevel", ignore_case=True),
        Prop("enabled", "Enabled"),
        Prop("acceptSecurityIdentifierInformation", "AcceptSecurityIdentifierInformation"),
    ),
)

KINDS = (OAUTH_SERVER, PARTNER_APPLICATION, OAUTH_CONFIGURATION)
CHECKS = (TEST_CS_EX_STORAGE_CONNECTIVITY,)
