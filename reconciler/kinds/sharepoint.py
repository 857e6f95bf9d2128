"""SharePoint Server: the documented syntax of its S2S OAuth cmdlets, and the kinds.

Syntax: Microsoft's SharePoint Server cmdlet reference, repository MicrosoftDocs/OfficeDocs-SharePoint-PowerShell,
folder `sharepoint/sharepoint-server-ps/SharePointServer/` (one page per cmdlet; each `### <Set>` SYNTAX block is
a parameter set). The same pages for SharePoint 2013-2019 are under `sharepoint/sharepoint-ps/
Microsoft.SharePoint.Powershell/` (older snapshots: `sharepoint/sharepoint-ps/sharepoint-server/`); their SYNTAX
blocks are the same.

Real output: SharePointDsc's SPTrustedSecurityTokenIssuer and SPAuthenticationRealm resources (repository
dsccommunity/SharePointDsc, `SharePointDsc/DSCResources/MSFT_SPTrustedSecurityTokenIssuer/
MSFT_SPTrustedSecurityTokenIssuer.psm1`, `.../MSFT_SPAuthenticationRealm/MSFT_SPAuthenticationRealm.psm1`, and
their Pester mocks in `tests/Unit/SharePointDsc/`):
- Get-SPTrustedSecurityTokenIssuer returns objects with Name, Description, RegisteredIssuerName
  (`<issuer id>@<realm>`), MetadataEndPoint (a System.Uri; SharePointDsc reads `.OriginalString`),
  SigningCertificate (an X509Certificate2; SharePointDsc reads `.Thumbprint`) and IsSelfIssuer. There is no
  IsTrustBroker property: SharePointDsc reads it as the complement of IsSelfIssuer ("Get-SPTrustedSecurityTokenIssuer
  does not return a property IsTrustBroker").
- Get-SPAuthenticationRealm returns the farm's realm as a bare string (SharePointDsc compares it as text).

How the PowerShell transports' runner writes those values: a System.Uri prints as its URL, so it arrives as a
string; an X509Certificate2 prints as its multi-line `[Subject] ... [Thumbprint]` text, so the thumbprint is read
from that text (or from a `Thumbprint` property, if a transport gives the object).

*Unconfirmed*: whether Set-SPTrustedSecurityTokenIssuer leaves IsTrustBroker alone when the switch is omitted
(we always write the value we want, `-IsTrustBroker:$false` included, together with the metadata endpoint, as
SharePointDsc always passes one of the distinguishing parameters); the default parameter set of
Set-SPTrustedSecurityTokenIssuer (not documented, so a Set never relies on it); the NameId property of an issuer
(not read).

App principal permissions are not a kind: Set-SPAppPrincipalPermission's -AppPrincipal is an SPAppPrincipal
object that only Get-SPAppPrincipal yields (so the provider pipes one into the other, reconciler.commands.Pipe),
and no cmdlet reads a permission back, so a grant is never compared with a live value. The provider runs it as a
handler (reconciler.providers.sharepoint). Microsoft's own scripts make the grant for Exchange the same way
(Set-SiteMailboxConfig.ps1, published with "Configure site mailboxes in SharePoint Server": after
New-SPTrustedSecurityTokenIssuer -MetadataEndPoint https://<exchange>/autodiscover/metadata/json/1,
`Get-SPAppPrincipal -Site <root web> -NameIdentifier $exchange.NameId` then `Set-SPAppPrincipalPermission
-AppPrincipal ... -Site <root web> -Scope SiteSubscription -Right FullControl -EnableAppOnlyPolicy`).
*Unconfirmed*: the value of an issuer's NameId (not documented; it is not read here, and a grant names its
`nameIdentifier` itself, `<issuer id>@<realm>` as the Get-SPAppPrincipal page shows); the error text of
Get-SPAppPrincipal for a name identifier SharePoint does not know (the lab's wording).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from reconciler.kinds.certificates import (
    CERTIFICATE_OF,
    certificate_of_schema,
    certificate_of_sources,
    resolve_current_signer,
)
from reconciler.kinds.declaration import CmdletKind, Prop, reads
from reconciler.kinds.schema import IDENTITY, URL
from reconciler.kinds.syntax import Parameter, ParamType, cmdlet, enum_, identity, obj, string, switch
from reconciler.model import JSONValue

DOCS = "MicrosoftDocs/OfficeDocs-SharePoint-PowerShell: sharepoint/sharepoint-server-ps/SharePointServer/"
SHAREPOINT_SERVICE_NAME = "00000003-0000-0ff1-ce00-000000000000"
"""SharePoint's well-known S2S service name (the issuer id in its metadata document)."""
FARM = "Farm"
"""The identity of the farm's one authentication realm (Get/Set-SPAuthenticationRealm without -ServiceContext)."""

_ASSIGNMENT = identity("AssignmentCollection")
"""An SPAssignmentCollection object: documented in every set, never passed by this tool."""
_CERTIFICATE = [Parameter("Certificate", ParamType.BYTES)]
"""An X509Certificate2 object: the certificate parameter sets are declared, never used by this tool."""

# --- syntax ---------------------------------------------------------------------------------------

GET_SP_TRUSTED_SECURITY_TOKEN_ISSUER = cmdlet(
    "Get-SPTrustedSecurityTokenIssuer", DOCS + "Get-SPTrustedSecurityTokenIssuer.md",
    [*identity("Identity"), *_ASSIGNMENT],
    {"Default": "Identity AssignmentCollection"})
_ISSUER_PARAMETERS = [*string("Name", "Description", "RegisteredIssuerName", "MetadataEndPoint"), *identity("Identity"),
                      *_ASSIGNMENT, *_CERTIFICATE, *switch("IsTrustBroker", "Confirm", "WhatIf")]
NEW_SP_TRUSTED_SECURITY_TOKEN_ISSUER = cmdlet(
    "New-SPTrustedSecurityTokenIssuer", DOCS + "New-SPTrustedSecurityTokenIssuer.md", _ISSUER_PARAMETERS,
    {"ImportCertificateParameterSet": "Name! Certificate!",
     "MetadataEndPointParameterSet": "Name! MetadataEndPoint!"},
    common="AssignmentCollection Confirm Description IsTrustBroker RegisteredIssuerName WhatIf")
SET_SP_TRUSTED_SECURITY_TOKEN_ISSUER = cmdlet(
    "Set-SPTrustedSecurityTokenIssuer", DOCS + "Set-SPTrustedSecurityTokenIssuer.md", _ISSUER_PARAMETERS,
    {"ImportCertificateParameterSet": "Identity! Certificate",
     "MetadataEndPointParameterSet": "Identity! MetadataEndPoint"},
    common="AssignmentCollection Confirm Description IsTrustBroker RegisteredIssuerName WhatIf")
REMOVE_SP_TRUSTED_SECURITY_TOKEN_ISSUER = cmdlet(
    "Remove-SPTrustedSecurityTokenIssuer", DOCS + "Remove-SPTrustedSecurityTokenIssuer.md",
    [*identity("Identity"), *_ASSIGNMENT, *switch("Confirm", "WhatIf")],
    {"Default": "Identity! AssignmentCollection Confirm WhatIf"})

GET_SP_AUTHENTICATION_REALM = cmdlet(
    "Get-SPAuthenticationRealm", DOCS + "Get-SPAuthenticationRealm.md",
    [*identity("ServiceContext"), *_ASSIGNMENT],
    {"Default": "ServiceContext AssignmentCollection"})
SET_SP_AUTHENTICATION_REALM = cmdlet(
    "Set-SPAuthenticationRealm", DOCS + "Set-SPAuthenticationRealm.md",
    [*string("Realm"), *identity("ServiceContext"), *_ASSIGNMENT, *switch("Confirm", "WhatIf")],
    {"Default": "AssignmentCollection Confirm Realm ServiceContext WhatIf"})

# App principal permissions (run by the provider's `appPrincipalPermission` handler, reconciler.providers.sharepoint).
# Pages: Get-SPAppPrincipal.md, Set-SPAppPrincipalPermission.md, Remove-SPAppPrincipalPermission.md under DOCS;
# the SharePoint 2013-2019 pages (MicrosoftDocs/office-docs-powershell, sharepoint/sharepoint-ps/sharepoint-server/)
# have the same SYNTAX blocks.
GET_SP_APP_PRINCIPAL = cmdlet(
    "Get-SPAppPrincipal", DOCS + "Get-SPAppPrincipal.md",
    [*string("NameIdentifier"), *identity("Site"), *_ASSIGNMENT],
    {"Default": "NameIdentifier! Site! AssignmentCollection"})
"""`Get-SPAppPrincipal -NameIdentifier <String> -Site <SPWebPipeBind>`, both mandatory: "displays a specific app
principal object from the SharePoint app registry" (the page's example: `00000003-0000-0ff1-ce00-000000000000@<realm
GUID>`, i.e. `<client id>@<realm>`). OUTPUTS is empty on the page: what the object's properties are is not
documented, and nothing here reads them; the object is only piped on."""
_RIGHT = enum_("Right", "Read", "Write", "Manage", "FullControl")
_SCOPE = enum_("Scope", "Site", "SiteCollection", "SiteSubscription")
_APP_PRINCIPAL = obj("AppPrincipal", "Microsoft.SharePoint.SPAppPrincipal")
SET_SP_APP_PRINCIPAL_PERMISSION = cmdlet(
    "Set-SPAppPrincipalPermission", DOCS + "Set-SPAppPrincipalPermission.md",
    [*_APP_PRINCIPAL, *identity("Site"), *_ASSIGNMENT, *switch("Confirm", "WhatIf", "EnableAppOnlyPolicy"),
     *_RIGHT, *_SCOPE],
    {"Default": "AppPrincipal! Right! Scope! Site! AssignmentCollection Confirm WhatIf EnableAppOnlyPolicy"})
"""One set: -AppPrincipal <SPAppPrincipal> (mandatory; "Accept pipeline input: True (ByValue)"), -Right, -Scope,
-Site <SPWebPipeBind> (all mandatory), [-EnableAppOnlyPolicy] (a SwitchParameter, default False). -Right: the page
lists Read, Write, Manage, "Full Control"; its type SPCmdletAppPrincipalPermissionKind is not documented, and the
enumerator name FullControl is taken from the object model's SPAppPrincipalPermissionKind (None, Guest, Read, Write,
Manage, FullControl) and from Microsoft's own scripts (`-Right FullControl`: Set-SiteMailboxConfig.ps1, and the
Office Online / Workflow Manager trust pages). -Scope: Site, SiteCollection, SiteSubscription (the page; there is no
Farm scope). The page's example calls `Set-AppPrincipalPermission ... -Level Manage`, a name and a parameter the
cmdlet does not have: the SYNTAX block is followed, not the example."""
REMOVE_SP_APP_PRINCIPAL_PERMISSION = cmdlet(
    "Remove-SPAppPrincipalPermission", DOCS + "Remove-SPAppPrincipalPermission.md",
    [*_APP_PRINCIPAL, *identity("Site"), *_ASSIGNMENT, *switch("Confirm", "WhatIf", "DisableAppOnlyPolicy"),
     *_SCOPE],
    {"Default": "AppPrincipal! Scope! Site! AssignmentCollection Confirm WhatIf DisableAppOnlyPolicy"})
"""Declared from the page for the record (the same -AppPrincipal/-Scope/-Site, and -DisableAppOnlyPolicy); the
provider never removes a grant (see the handler's description)."""
APP_PRINCIPAL_CMDLETS = (GET_SP_APP_PRINCIPAL, SET_SP_APP_PRINCIPAL_PERMISSION)
"""What the provider's grant runs (one piped command); the transports' allow-lists include both."""
EXCHANGE_SERVICE_NAME = "00000002-0000-0ff1-ce00-000000000000"
"""Exchange's well-known S2S service name (the issuer id in its metadata document)."""

# --- how Get reports an issuer ----------------------------------------------------------------------

_THUMBPRINT = re.compile(r"\[Thumbprint\]\s*([0-9A-Fa-f]{40})")


@reads("MetadataEndPoint")
def read_metadata_endpoint(obj: Mapping[str, Any]) -> JSONValue:
    """A System.Uri: its text, or (an object) its OriginalString / AbsoluteUri."""
    value = obj.get("metadataendpoint")
    if isinstance(value, Mapping):
        inner = {str(k).lower(): v for k, v in value.items()}
        value = inner.get("originalstring") or inner.get("absoluteuri")
    return str(value) if value not in (None, "") else None


@reads("IsSelfIssuer")
def read_is_trust_broker(obj: Mapping[str, Any]) -> JSONValue:
    """The complement of IsSelfIssuer (SharePointDsc); unknown when the property is missing."""
    value = obj.get("isselfissuer")
    return (not value) if isinstance(value, bool) else None


@reads("SigningCertificate")
def read_signing_thumbprint(obj: Mapping[str, Any]) -> JSONValue:
    """An X509Certificate2: its Thumbprint property, or the `[Thumbprint]` line of its text."""
    value = obj.get("signingcertificate")
    if isinstance(value, Mapping):
        inner = {str(k).lower(): v for k, v in value.items()}
        return str(inner["thumbprint"]).upper() if inner.get("thumbprint") else None
    match = _THUMBPRINT.search(str(value or ""))
    return match.group(1).upper() if match else None


def _urls_equal(want: Any, have: Any, desired: Mapping[str, Any]) -> bool:
    """A Uri's text may gain or lose a trailing slash; compare without it, case-insensitively."""
    def norm(v: Any) -> str:
        return str(v or "").rstrip("/").casefold()
    return norm(want) == norm(have)


# --- kinds ---------------------------------------------------------------------------------------------

REFRESH_NOTE = (
    "SharePoint keeps one SigningCertificate per issuer, taken from the metadata document when the issuer is made or "
    "its endpoint set; it re-reads the document on its own schedule too. After the effective date, the next cycle "
    "re-reads it (Set-SPTrustedSecurityTokenIssuer -MetadataEndPoint) if SharePoint has not; until then, tokens "
    "signed with the new certificate may be refused. *Unconfirmed*: that setting the same endpoint re-imports the "
    "document (the reference says the cmdlet sets the endpoint; the lab re-reads it).")

TRUSTED_SECURITY_TOKEN_ISSUER = CmdletKind(
    kind="TrustedSecurityTokenIssuer",
    description="An SPTrustedSecurityTokenIssuer: a server SharePoint accepts tokens from (Exchange, Skype for "
                "Business), created from its metadata document.",
    get=GET_SP_TRUSTED_SECURITY_TOKEN_ISSUER, new=NEW_SP_TRUSTED_SECURITY_TOKEN_ISSUER,
    set=SET_SP_TRUSTED_SECURITY_TOKEN_ISSUER, remove=REMOVE_SP_TRUSTED_SECURITY_TOKEN_ISSUER,
    identity_property="Name", new_identity="Name", identity_parameter="Identity",
    after=("AuthenticationRealm",),
    required_when_present=("metadataEndPoint",),
    # Set-SPTrustedSecurityTokenIssuer's two sets differ only in -Certificate / -MetadataEndPoint and no default
    # is documented: every Set names the endpoint (as SharePointDsc does) and the whole wanted state.
    together=(("metadataEndPoint", "description", "isTrustBroker", "signingCertificateThumbprint"),),
    extra_schema={CERTIFICATE_OF: certificate_of_schema(
        "A target of this manifest whose signing certificate this issuer must hold (a Skype pool declaring its "
        "OAuthCertificate, an Exchange organization declaring its AuthCertificate): when the issuer's "
        "SigningCertificate is not the one that target signs with now, Set-SPTrustedSecurityTokenIssuer "
        "-MetadataEndPoint re-reads the document.")},
    resolve=resolve_current_signer,
    references=certificate_of_sources,
    refresh_note=REFRESH_NOTE,
    identity_schema={**IDENTITY, "description": "The issuer's Name."},
    props=(
        Prop("metadataEndPoint", None, parameter="MetadataEndPoint", read=read_metadata_endpoint, metadata_url=True,
             equal=_urls_equal, schema={**URL, "description": "The issuer's metadata document (downloaded when "
                                                              "New or Set runs)."}),
        Prop("isTrustBroker", None, parameter="IsTrustBroker", read=read_is_trust_broker,
             schema={"type": "boolean", "description": "Read as the complement of IsSelfIssuer."}),
        Prop("description", "Description", schema={"type": "string"}),
        Prop("registeredIssuerName", "RegisteredIssuerName", parameter=None, manifest=False, ignore_case=True),
        Prop("signingCertificateThumbprint", None, parameter="MetadataEndPoint", manifest=False,
             read=read_signing_thumbprint, write=lambda _value, fields: fields.get("metadataEndPoint"),
             description="The partner certificate the issuer holds (SigningCertificate); with certificateOf, the one "
                         "that target signs with now: a difference re-reads the metadata document."),
    ),
)

AUTHENTICATION_REALM = CmdletKind(
    kind="AuthenticationRealm",
    description="The farm's authentication realm (Set-SPAuthenticationRealm without -ServiceContext).",
    get=GET_SP_AUTHENTICATION_REALM, set=SET_SP_AUTHENTICATION_REALM,
    singleton=FARM, new_identity=None, identity_parameter=None,
    identity_schema={"type": "string", "pattern": "^[Ff][Aa][Rr][Mm]$",
                     "errorMessage": "must be Farm (there is one farm realm)"},
    props=(
        Prop("realm", "Realm", ignore_case=True,
             schema={"type": "string", "minLength": 1,
                     "description": "Partners see SharePoint as 00000003-0000-0ff1-ce00-000000000000@<realm>."}),
    ),
)

KINDS = (AUTHENTICATION_REALM, TRUSTED_SECURITY_TOKEN_ISSUER)
DOCUMENTED_ONLY = (REMOVE_SP_APP_PRINCIPAL_PERMISSION,)
"""Declared from the reference but never run."""
