"""The default lab estate that `reconcile lab init` creates.

Two pools from Microsoft's own scripts: `atl-cs-001`, the on-premises Litware pool of seed 000,
drifted so a first plan exercises every branch of that script (a stray `app`, `microsoft.exchange`
with the wrong ApplicationIdentifier, `microsoft.sharepoint` missing, OAuth configuration not set);
and `fab-cs-001`, the Fabrikam hybrid pool of seed 004, whose `microsoft.sts` still points at an old
tenant. Metadata documents for Exchange, SharePoint (both of its URLs), the Skype pool and ACS are
served by the lab server, and the lab tenant's federation metadata XML (Entra ID, ENTRA_PATH).

`atl-exchange-001` is the Litware Exchange organization (reconciler.lab.exchange) as Exchange setup
leaves it: the partner applications Exchange makes itself (`Exchange Online`, `Microsoft Graph`,
`TeamsScheduler`, `CloudVoicemail`, `SfBLegacy`, as recorded from a real server; see
built_in_partner_applications) with the accounts they link, an AuthConfig signing with the lab's
`exchange` certificate, no auth server and no role assignments, so neither side trusts the other yet
and Test-CsExStorageConnectivity on atl-cs-001 fails. The two host records link each other
(`exchange` on the pool, `skype` on Exchange) and name their own `service` (metadata document and
certificate); the Exchange record also lists its `servers` (for iisreset) and the `mailboxes` the
storage test can reach. fab-cs-001 is linked to nothing.

`atl-sharepoint-001` is the Litware SharePoint farm (reconciler.lab.sharepoint), serving the SharePoint
documents above: its authentication realm is the organization's, and it trusts no token issuer yet.

The Office 365 side is the lab tenant LAB_TENANT_ID, served as Microsoft Graph and Entra ID's token
endpoint by the same server (reconciler.lab.graph): the Skype for Business Online service principal
(enabled, its usual SPNs but not yet the on-premises pool's) and Office 365 Exchange Online's (DISABLED,
so seed 004's `Set-MSOLServicePrincipal -AccountEnabled $true` has something to do), neither with a
keyCredential; and two client apps for the tool, LAB_CLIENT_ID (secret LAB_CLIENT_SECRET,
Application.ReadWrite.All) and LAB_READONLY_CLIENT_ID (secret LAB_READONLY_SECRET, Application.Read.All).
The secrets are lab-only constants; the state keeps only their SHA-256.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reconciler.kinds.exchange import BUILT_IN_PARTNER_APPLICATIONS
from reconciler.lab import certs, exchange, graph, sharepoint, skype
from reconciler.lab.graph_apps import APP_ROLE_ASSIGNMENT_WRITE
from reconciler.lab.state import FORMAT

LAB_TENANT_ID = "8a1c5e3f-2b7d-4c9e-a6f0-1d2e3f4a5b6c"
ACS_ID = "00000001-0000-0000-c000-000000000000"
EXCHANGE_ID = "00000002-0000-0ff1-ce00-000000000000"
SHAREPOINT_ID = "00000003-0000-0ff1-ce00-000000000000"
SKYPE_ID = "00000004-0000-0ff1-ce00-000000000000"
WRONG_EXCHANGE_ID = "00000005-0000-0ff1-ce00-000000000000"
STRAY_APP_ID = "3b5f1c9e-7a2d-4e8f-9c1b-5d6e7f8a9b0c"
OLD_TENANT_STS_URL = "https://accounts.accesscontrol.windows.net/00000000-0000-0000-0000-000000000000/metadata/json/1"

LITWARE_POOL = "atl-cs-001"
EXCHANGE_HOST = "atl-exchange-001"
SHAREPOINT_HOST = "atl-sharepoint-001"
EXCHANGE_SERVERS = ("atl-exchange-001", "atl-exchange-002")
EXCHANGE_MAILBOXES = ("sip:kenmyer@litwareinc.com", "sip:pilar@litwareinc.com")

EXCHANGE_PATH = "/atl-exchange-001.litwareinc.com/autodiscover/metadata/json/1"
SHAREPOINT_PATH = "/atl-sharepoint-001.litwareinc.com/jsonmetadata.ashx"
SHAREPOINT_PATH_15 = "/atl-sharepoint-001.litwareinc.com/_layouts/15/metadata/json/1"
SKYPE_PATH = "/atl-cs-001.litwareinc.com/metadata/json/1"
ACS_PATH = f"/accounts.accesscontrol.windows.net/{LAB_TENANT_ID}/metadata/json/1"
ENTRA_PATH = f"/login.windows.net/{LAB_TENANT_ID}/federationmetadata/2007-06/federationmetadata.xml"
"""The lab tenant's federation metadata XML (an AzureAD auth server's AuthMetadataUrl; EvoSts in hybrid)."""

LAB_CLIENT_ID = "5e0c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b"
LAB_CLIENT_SECRET = "lab-only-client-secret-not-for-production"  # a lab-only constant
LAB_READONLY_CLIENT_ID = "6f1d2b3c-4d5e-4f60-9b0c-1d2e3f4a5b6c"
LAB_READONLY_SECRET = "lab-only-read-only-secret-not-for-production"
LAB_TOKEN_PATH = f"/{graph.TOKEN_HOST}/{LAB_TENANT_ID}/oauth2/v2.0/token"
"""Path of the lab tenant's token endpoint on the lab server (prefix the server's base URL)."""
LAB_GRAPH_PATH = f"/{graph.GRAPH_HOST}/{graph.GRAPH_VERSION}"
"""Path of the lab's Graph base URL on the lab server (prefix the server's base URL)."""

SKYPE_ONLINE_SPNS = (
    SKYPE_ID,
    f"{SKYPE_ID}/*.lync.com",
    f"{SKYPE_ID}/lync.com",
    f"{SKYPE_ID}/*.online.lync.com",
    f"{SKYPE_ID}/*.infra.lync.com",
)
EXCHANGE_ONLINE_SPNS = (
    EXCHANGE_ID,
    f"{EXCHANGE_ID}/outlook.office365.com",
    f"{EXCHANGE_ID}/*.outlook.com",
    f"{EXCHANGE_ID}/outlook.com",
    f"{EXCHANGE_ID}/ps.outlook.com",
    "https://outlook.office365.com/",
)

STYLES = ("exchange", "sharepoint", "acs", "entra")
"""How a service writes its metadata document (see reconciler.lab.server.render_document)."""


def service(
    service_name: str,
    realm: str,
    host: str,
    style: str,
    name: str,
    make_certificate: Callable[[str], bytes] = certs.make_certificate,
) -> dict[str, Any]:
    """A service entry of the state, with a fresh certificate whose CN is the service's host."""
    return {
        "serviceName": service_name,
        "realm": realm,
        "host": host,
        "style": style,
        "name": name,
        "certificate": certs.b64(make_certificate(host)),
    }


def default_estate(make_certificate: Callable[[str], bytes] = certs.make_certificate) -> dict[str, Any]:
    """The whole default state (certificates generated now, so every lab has its own)."""
    services = {
        "exchange": service(EXCHANGE_ID, "litwareinc.com", "atl-exchange-001.litwareinc.com", "exchange",
                            "Exchange", make_certificate),
        "sharepoint": service(SHAREPOINT_ID, "litwareinc.com", "atl-sharepoint-001.litwareinc.com",
                              "sharepoint", "SharePoint", make_certificate),
        "skype": service(SKYPE_ID, "litwareinc.com", "atl-cs-001.litwareinc.com", "exchange",
                         "Skype for Business Server", make_certificate),
        "acs": service(ACS_ID, LAB_TENANT_ID, "accounts.accesscontrol.windows.net", "acs",
                       "Microsoft Azure Access Control Service", make_certificate),
        "entra": service(f"https://sts.windows.net/{LAB_TENANT_ID}/", LAB_TENANT_ID, "login.windows.net", "entra",
                         "Microsoft Entra ID", make_certificate),
    }
    documents = {
        EXCHANGE_PATH: {"service": "exchange", "status": "ok"},
        SHAREPOINT_PATH: {"service": "sharepoint", "status": "ok"},
        SHAREPOINT_PATH_15: {"service": "sharepoint", "status": "ok"},
        SKYPE_PATH: {"service": "skype", "status": "ok"},
        ACS_PATH: {"service": "acs", "status": "ok"},
        ENTRA_PATH: {"service": "entra", "status": "ok"},
    }
    return {
        "format": FORMAT,
        "tenantId": LAB_TENANT_ID,
        "services": services,
        "documents": documents,
        "hosts": {
            LITWARE_POOL: _host(_litware_objects(services["exchange"]["certificate"]), service="skype",
                                exchange=EXCHANGE_HOST),
            "fab-cs-001": _host(_fabrikam_objects()),
            EXCHANGE_HOST: _host(_exchange_objects(services["exchange"]["certificate"]), platform="exchange",
                                 service="exchange", skype=LITWARE_POOL, servers=list(EXCHANGE_SERVERS),
                                 mailboxes=list(EXCHANGE_MAILBOXES), iisResets={}),
            SHAREPOINT_HOST: _host(_sharepoint_objects(), platform="sharepoint", service="sharepoint"),
        },
        "failures": [],
        "tenants": {LAB_TENANT_ID: lab_tenant()},
    }


def lab_tenant() -> dict[str, Any]:
    """The lab tenant's Graph objects and client apps (see the module docstring)."""
    return graph.tenant(
        [
            graph.service_principal(LAB_TENANT_ID, SKYPE_ID, "Skype for Business Online", account_enabled=True,
                                    names=SKYPE_ONLINE_SPNS),
            graph.service_principal(LAB_TENANT_ID, EXCHANGE_ID, "Office 365 Exchange Online", account_enabled=False,
                                    names=EXCHANGE_ONLINE_SPNS),
        ],
        {
            LAB_CLIENT_ID: graph.client("reconciler (lab)", [graph.READ_WRITE_ALL, APP_ROLE_ASSIGNMENT_WRITE],
                                         secret=LAB_CLIENT_SECRET),
            LAB_READONLY_CLIENT_ID: graph.client("reconciler read-only (lab)", [graph.READ_ALL],
                                                 secret=LAB_READONLY_SECRET),
        },
    )


def _host(objects: dict[str, Any], platform: str = "skype", **record: Any) -> dict[str, Any]:
    """A host record; `record` adds its links and lists (service, exchange/skype, servers, mailboxes...)."""
    return {"platform": platform, "roundTrips": 0, "calls": {}, **record, "objects": objects}


def _litware_objects(exchange_certificate: str) -> dict[str, Any]:
    objects = skype.empty_objects()
    objects[skype.CONFIGURATION]["Realm"] = "litwareinc.com"
    objects[skype.PARTNER_APPLICATION] = [
        skype.normalize(skype.PARTNER_APPLICATION, {
            "Identity": "app",
            "ApplicationIdentifier": STRAY_APP_ID,
            "ApplicationTrustLevel": "User",
            "UseOAuthServer": True,
        }),
        skype.normalize(skype.PARTNER_APPLICATION, {
            "Identity": "microsoft.exchange",
            "ApplicationIdentifier": WRONG_EXCHANGE_ID,
            "Realm": "litwareinc.com",
            "ApplicationTrustLevel": "Application",
            "CertificateRawData": exchange_certificate,
        }),
    ]
    return objects


GRAPH_ACT_AS_PERMISSIONS = (
    "Mail.Read", "Mail.Write", "Mail.Send", "Calendars.Read", "Calendars.ReadWrite", "Calendars.Read.Shared",
    "Calendars.ReadWrite.Shared", "Contacts.Read", "Contacts.ReadWrite", "Contacts.Read.Shared",
    "Contacts.ReadWrite.Shared", "Mail.ReadWrite", "Calendars.Write", "Contacts.Write", "Sites.Read.All",
    "Sites.ReadWrite.All", "User.Read", "User.ReadWrite", "User.ReadBasic.All", "User.Read.All", "User.ReadWrite.All",
    "Group.Read.All", "Group.ReadWrite.All", "People.Read", "People.ReadWrite", "MailboxSettings.ReadWrite",
    "Privilege.SkipClientAccessRules", "Tasks.Read", "Tasks.ReadWrite",
)
"""Microsoft Graph's ActAsPermissions as recorded (microsoft/CSS-Exchange
Diagnostics/HealthChecker/Tests/DataCollection/E19/Exchange/GetPartnerApplication.xml)."""

EXCHANGE_ONLINE_ACCOUNT = "Exchange Online-ApplicationAccount"
TEAMS_ACCOUNT = "TeamsIntegration-ApplicationAccount"


def built_in_partner_applications() -> list[dict[str, Any]]:
    """The partner applications Exchange makes itself, as recorded in microsoft/CSS-Exchange
    Diagnostics/HealthChecker/Tests/DataCollection/E19/Exchange/GetPartnerApplication.xml (names, identifiers,
    Enabled, linked accounts, AcceptSecurityIdentifierInformation, ActAsPermissions; all UseAuthServer, no
    AuthMetadataUrl or Realm). One difference: the recording (a hybrid organization) has SfBLegacy enabled; the
    lab's organization is not hybrid, and SfBLegacy shares Skype's ApplicationIdentifier with the partner
    application the storage test looks for, so it is disabled here."""
    ids = BUILT_IN_PARTNER_APPLICATIONS
    apps: list[dict[str, Any]] = [
        {"Name": "Exchange Online", "Enabled": True, "LinkedAccount": EXCHANGE_ONLINE_ACCOUNT},
        {"Name": "Microsoft Graph", "Enabled": True, "AcceptSecurityIdentifierInformation": True,
         "ActAsPermissions": list(GRAPH_ACT_AS_PERMISSIONS)},
        {"Name": "TeamsScheduler", "Enabled": False, "LinkedAccount": TEAMS_ACCOUNT},
        {"Name": "CloudVoicemail", "Enabled": False, "LinkedAccount": TEAMS_ACCOUNT},
        {"Name": "SfBLegacy", "Enabled": False},
    ]
    return [exchange.normalize(exchange.PARTNER_APPLICATION, {
        **app, "ApplicationIdentifier": ids[app["Name"]], "UseAuthServer": True}) for app in apps]


def _exchange_objects(certificate: str) -> dict[str, Any]:
    """Exchange as setup leaves it: its built-in partner applications (with the accounts they link), no auth
    server, and its own signing certificate."""
    objects = exchange.empty_objects()
    objects[exchange.PARTNER_APPLICATION] = built_in_partner_applications()
    objects[exchange.LINKED_USER] = [exchange.normalize(exchange.LINKED_USER, {"Name": name})
                                     for name in (EXCHANGE_ONLINE_ACCOUNT, TEAMS_ACCOUNT)]
    objects[exchange.AUTH_CONFIG].update(
        ServiceName=EXCHANGE_ID,
        Realm="",
        CurrentCertificateThumbprint=certs.thumbprint(certs.from_b64(certificate)),
    )
    return objects


def _sharepoint_objects() -> dict[str, Any]:
    """A farm whose realm is the organization's (what its metadata documents publish), trusting no issuer."""
    objects = sharepoint.empty_objects()
    objects[sharepoint.REALM]["Realm"] = "litwareinc.com"
    return objects


def _fabrikam_objects() -> dict[str, Any]:
    objects = skype.empty_objects()
    objects[skype.CONFIGURATION].update(ServiceName=SKYPE_ID, Realm="fabrikam.com")
    objects[skype.OAUTH_SERVER] = [
        skype.normalize(skype.OAUTH_SERVER, {"Identity": "microsoft.sts", "MetadataUrl": OLD_TENANT_STS_URL}),
    ]
    return objects
