"""The Exchange cmdlet emulation, the default estate's Exchange host and Test-CsExStorageConnectivity."""

from __future__ import annotations

import copy
import datetime
import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from reconciler.errors import CmdletError, MetadataError, ReconcilerError
from reconciler.lab import admin, certs, estate, exchange
from reconciler.lab.emulator import CmdletContext, execute_batch, platform, run_command
from reconciler.lab.server import LabServer, find_document, render_document
from reconciler.lab.state import LabStore
from reconciler.lab.transport import LabTransport
from reconciler.metadata import MetadataDocument, parse_metadata
from reconciler.transports.base import Command, CommandResult

POOL = "atl-cs-001"
EXCHANGE = "atl-exchange-001"
LAB = "http://lab"
SKYPE_URL = LAB + estate.SKYPE_PATH
EXCHANGE_URL = LAB + estate.EXCHANGE_PATH
SHAREPOINT_URL = LAB + estate.SHAREPOINT_PATH
ACS_URL = LAB + estate.ACS_PATH
MISSING_URL = LAB + "/nothing-here"
AMBIGUOUS = "Parameter set cannot be resolved using the specified named parameters."
ACCOUNT = "LyncEnterprise-ApplicationAccount"
UPN = f"{ACCOUNT}@litwareinc.com"
KEN = "sip:kenmyer@litwareinc.com"
UNAUTHORIZED = "Test-CsExStorageConnectivity : The remote server returned an error: (401) Unauthorized. "
NEW_THUMBPRINT = "0123456789ABCDEF0123456789ABCDEF01234567"
OTHER_THUMBPRINT = "FEDCBA9876543210FEDCBA9876543210FEDCBA98"

PARTNER_PROPERTIES = ["Enabled", "ApplicationIdentifier", "CertificateStrings", "AuthMetadataUrl", "Realm",
                      "UseAuthServer", "AcceptSecurityIdentifierInformation", "LinkedAccount", "DeploymentId",
                      "IssuerIdentifier", "AccountType", "AppOnlyPermissions", "ActAsPermissions", "Name", "Identity"]
"""Get-PartnerApplication's properties in the order GetPartnerApplication.xml (microsoft/CSS-Exchange) records them."""
BUILT_INS = ["Exchange Online", "Microsoft Graph", "TeamsScheduler", "CloudVoicemail", "SfBLegacy"]
FIXTURES = Path(__file__).parent / "fixtures" / "metadata"
ENTRA_URL = LAB + "/login.windows.net/tenant/federationmetadata/2007-06/federationmetadata.xml"
ADFS_URL = LAB + "/fs.litwareinc.com/FederationMetadata/2007-06/FederationMetadata.xml"
FEDERATION = {ENTRA_URL: "entra-federationmetadata.xml", ADFS_URL: "adfs-federationmetadata.xml"}
EXCHANGE_CMDLETS = ["Get-PartnerApplication", "New-PartnerApplication", "Set-PartnerApplication",
                    "Remove-PartnerApplication", "Get-AuthServer", "New-AuthServer", "Set-AuthServer",
                    "Remove-AuthServer", "Get-AuthConfig", "Set-AuthConfig", "Get-LinkedUser", "New-LinkedUser",
                    "Remove-LinkedUser", "Get-ManagementRoleAssignment", "New-ManagementRoleAssignment",
                    "Remove-ManagementRoleAssignment", "iisreset", "Get-SettingOverride", "New-SettingOverride",
                    "Set-SettingOverride", "Remove-SettingOverride", "Get-OrganizationConfig",
                    "Set-OrganizationConfig"]


def thumbprint_of(state: Mapping[str, Any], service: str) -> str:
    return certs.thumbprint(certs.from_b64(state["services"][service]["certificate"]))


# --- in-memory runs (documents rendered from the state, no HTTP) --------------------------------


@pytest.fixture
def state(lab_default_estate: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(lab_default_estate)


@pytest.fixture
def fetched() -> list[str]:
    return []


@pytest.fixture
def context(state: dict[str, Any], fetched: list[str]) -> CmdletContext:
    """Documents as the lab server renders them from `state`, without HTTP."""

    def fetch(url: str) -> MetadataDocument:
        fetched.append(url)
        if url in FEDERATION:  # federation metadata XML, as Entra ID and AD FS publish it
            return parse_metadata(url, (FIXTURES / FEDERATION[url]).read_bytes())
        found = find_document(state, urlsplit(url).path)
        if found is None or found[1].get("status") != "ok":
            raise MetadataError(url, "HTTP 404")
        body = json.dumps(render_document(state["services"][found[1]["service"]], url)).encode()
        return parse_metadata(url, body)

    return CmdletContext(fetch=fetch)


Runner = Callable[..., CommandResult]


@pytest.fixture
def run(state: dict[str, Any], context: CmdletContext) -> Runner:
    def runner(cmdlet: str, host: str = EXCHANGE, **parameters: Any) -> CommandResult:
        return run_command(state, host, Command(cmdlet, parameters), context)

    return runner


def iisreset(*arguments: str) -> Command:
    """iisreset as the provider sends it: a native command with positional arguments."""
    return Command("iisreset", native=True, arguments=arguments)


def objects(state: Mapping[str, Any], kind: str, host: str = EXCHANGE) -> Any:
    return state["hosts"][host]["objects"][kind]


def named(state: Mapping[str, Any], kind: str, name: str, host: str = EXCHANGE) -> dict[str, Any] | None:
    found = [o for o in objects(state, kind, host) if o["Name"].lower() == name.lower()]
    return found[0] if found else None


def ok(result: CommandResult) -> tuple[Any, ...]:
    assert result.ok, result.error
    return result.output


def done(result: CommandResult) -> bool:
    """A command that succeeded with no output (Set, Remove, iisreset)."""
    assert ok(result) == ()
    return True


def fails(result: CommandResult, cmdlet: str, message: str) -> bool:
    assert not result.ok, result
    assert result.error == f"{cmdlet} : {message}", result.error
    return True


def not_found(identity: str) -> str:
    return f"The operation couldn't be performed because object '{identity}' couldn't be found."


def user_not_found(name: str) -> str:
    return (f'Couldn\'t find object "{name}". Please make sure that it was spelled correctly or specify a '
            "different object.")


def add_account(run: Runner, name: str = ACCOUNT, *roles: str) -> None:
    ok(run("New-LinkedUser", Name=name, UserPrincipalName=f"{name}@litwareinc.com"))
    for role in roles:
        ok(run("New-ManagementRoleAssignment", Role=role, User=name))


# --- platform, dispatch and the default estate --------------------------------------------------


def test_exchange_platform_is_registered() -> None:
    plat = platform("Exchange")
    assert plat.name == "exchange"
    assert sorted(plat.cmdlets) == sorted([*EXCHANGE_CMDLETS, "New-ExchangeCertificate", "Get-ExchangeCertificate"])
    assert plat.cmdlet_name("get-partnerAPPLICATION") == "Get-PartnerApplication"
    assert plat.kinds == {"PartnerApplication": False, "AuthServer": False, "AuthConfig": True, "LinkedUser": False,
                          "ManagementRoleAssignment": False, "SettingOverride": False, "OrganizationConfig": True}
    assert "Test-CsExStorageConnectivity" in platform("skype").cmdlets


@pytest.mark.parametrize("cmdlet", EXCHANGE_CMDLETS)
def test_unknown_parameter_on_every_exchange_cmdlet(run: Runner, cmdlet: str) -> None:
    assert fails(run(cmdlet, Bogus=1), cmdlet, "A parameter cannot be found that matches parameter name 'Bogus'.")


def test_skype_cmdlets_do_not_run_on_exchange_and_back(run: Runner) -> None:
    assert fails(run("Get-CsPartnerApplication"), "Get-CsPartnerApplication",
                 "The term 'Get-CsPartnerApplication' is not recognized as the name of a cmdlet, function, "
                 "script file, or operable program.")
    assert fails(run("Get-PartnerApplication", host=POOL), "Get-PartnerApplication",
                 "The term 'Get-PartnerApplication' is not recognized as the name of a cmdlet, function, "
                 "script file, or operable program.")


def test_names_are_case_insensitive_and_common_parameters_accepted(run: Runner, state: dict[str, Any]) -> None:
    assert done(run("set-partnerapplication", **{"-IDENTITY": "exchange online", "enabled": True,
                                                "ErrorAction": "Stop", "Confirm": False,
                                                "DomainController": "dc1.litwareinc.com"}))
    assert named(state, "PartnerApplication", "Exchange Online")["Enabled"] is True  # type: ignore[index]


def test_default_estate_exchange_host(state: dict[str, Any]) -> None:
    host = state["hosts"][EXCHANGE]
    assert host["platform"] == "exchange"
    assert host["servers"] == ["atl-exchange-001", "atl-exchange-002"]
    assert host["mailboxes"] == ["sip:kenmyer@litwareinc.com", "sip:pilar@litwareinc.com"]
    assert (host["skype"], host["service"], host["iisResets"]) == (POOL, "exchange", {})
    assert state["hosts"][POOL]["exchange"] == EXCHANGE and state["hosts"][POOL]["service"] == "skype"
    assert "exchange" not in state["hosts"]["fab-cs-001"] and "service" not in state["hosts"]["fab-cs-001"]
    apps = host["objects"]["PartnerApplication"]
    assert [a["Name"] for a in apps] == BUILT_INS
    # as recorded in GetPartnerApplication.xml, but SfBLegacy (disabled: see estate.built_in_partner_applications)
    assert {a["Name"]: (a["ApplicationIdentifier"], a["Enabled"], a["LinkedAccount"], a["UseAuthServer"])
            for a in apps} == {
        "Exchange Online": ("00000002-0000-0ff1-ce00-000000000000", True, "Exchange Online-ApplicationAccount", True),
        "Microsoft Graph": ("00000003-0000-0000-c000-000000000000", True, None, True),
        "TeamsScheduler": ("7557eb47-c689-4224-abcf-aef9bd7573df", False, "TeamsIntegration-ApplicationAccount", True),
        "CloudVoicemail": ("db7de2b5-2149-435e-8043-e080dd50afae", False, "TeamsIntegration-ApplicationAccount", True),
        "SfBLegacy": ("00000004-0000-0ff1-ce00-000000000000", False, None, True),
    }
    graph = apps[1]
    assert graph["AcceptSecurityIdentifierInformation"] is True and len(graph["ActAsPermissions"]) == 29
    assert [u["Name"] for u in host["objects"]["LinkedUser"]] == ["Exchange Online-ApplicationAccount",
                                                                  "TeamsIntegration-ApplicationAccount"]
    assert host["objects"]["AuthConfig"] == {
        "Name": "Auth Configuration", "Identity": "Auth Configuration", "ServiceName": estate.EXCHANGE_ID,
        "Realm": "", "CurrentCertificateThumbprint": thumbprint_of(state, "exchange"),
        "NextCertificateThumbprint": None, "NextCertificateEffectiveDate": None, "PreviousCertificateThumbprint": None,
    }
    for kind in ("AuthServer", "ManagementRoleAssignment"):
        assert host["objects"][kind] == []


def test_output_is_a_copy(run: Runner, state: dict[str, Any]) -> None:
    output = ok(run("Get-PartnerApplication", Identity="Exchange Online"))[0]
    output["Enabled"] = False
    assert named(state, "PartnerApplication", "Exchange Online")["Enabled"] is True  # type: ignore[index]


def test_get_partner_application(run: Runner) -> None:
    every = ok(run("Get-PartnerApplication"))
    assert [a["Name"] for a in every] == BUILT_INS
    assert all(list(a) == PARTNER_PROPERTIES for a in every)  # the recorded shape and order
    online = every[0]
    assert (online["AuthMetadataUrl"], online["Realm"], online["AccountType"], online["CertificateStrings"]) == (
        "", "", "OrganizationalAccount", [])  # unset strings are "", as recorded
    assert online["LinkedAccount"] == "litwareinc.com/Users/Exchange Online-ApplicationAccount"  # canonical name
    assert every[1]["LinkedAccount"] is None
    assert ok(run("Get-PartnerApplication", Identity="EXCHANGE ONLINE")) == (online,)
    assert ok(run("Get-PartnerApplication", Identity="Exchange Online", Organization="litwareinc.com",
                  DomainController="dc1.litwareinc.com")) == (online,)
    assert fails(run("Get-PartnerApplication", Identity="Lync"), "Get-PartnerApplication", not_found("Lync"))


def test_new_partner_application_from_metadata(run: Runner, state: dict[str, Any], fetched: list[str]) -> None:
    add_account(run)
    output = ok(run("New-PartnerApplication", Name=ACCOUNT, AuthMetadataUrl=SKYPE_URL, TrustAnySSLCertificate=True,
                    LinkedAccount=UPN))
    assert fetched == [SKYPE_URL]
    created = named(state, "PartnerApplication", ACCOUNT)
    cached = created.pop("CertificateStrings")  # the document's keys, cached until -RefreshAuthMetadata
    assert [certs.thumbprint(certs.from_b64(c)) for c in cached] == [
        certs.thumbprint(certs.from_b64(state["services"]["skype"]["certificate"]))]
    assert created == {
        "Name": ACCOUNT, "Identity": ACCOUNT, "ApplicationIdentifier": estate.SKYPE_ID, "Realm": "litwareinc.com",
        "AuthMetadataUrl": SKYPE_URL, "Enabled": True, "LinkedAccount": ACCOUNT,  # the user's Name, found by UPN
        "AcceptSecurityIdentifierInformation": False, "AccountType": "OrganizationalAccount", "UseAuthServer": False,
        "DeploymentId": None, "IssuerIdentifier": None, "AppOnlyPermissions": None,
        "ActAsPermissions": None,
    }
    assert output == ({**created, "CertificateStrings": cached, "LinkedAccount": f"litwareinc.com/Users/{ACCOUNT}"},)


def test_new_partner_application_with_identifier(run: Runner, state: dict[str, Any], fetched: list[str]) -> None:
    assert ok(run("New-PartnerApplication", Name="HRApp", ApplicationIdentifier="00000006-0000-0dd1-ac00-000000000000",
                  Realm="contoso.com", Enabled=False, AcceptSecurityIdentifierInformation=True,
                  AccountType="consumeraccount", ActAsPermissions=["Mail.Read", "Mail.Send"], IssuerIdentifier="x",
                  AppOnlyPermissions="Mail.Read", DomainController="dc1.litwareinc.com", WhatIf=False))
    created = named(state, "PartnerApplication", "hrapp")
    assert created is not None
    assert (created["ApplicationIdentifier"], created["Realm"], created["UseAuthServer"], created["Enabled"]) == (
        "00000006-0000-0dd1-ac00-000000000000", "contoso.com", True, False)
    assert (created["AcceptSecurityIdentifierInformation"], created["AccountType"]) == (True, "ConsumerAccount")
    assert (created["ActAsPermissions"], created["AppOnlyPermissions"], created["IssuerIdentifier"]) == (
        ["Mail.Read", "Mail.Send"], ["Mail.Read"], "x")
    assert (created["AuthMetadataUrl"], created["LinkedAccount"]) == (None, None)
    assert ok(run("New-PartnerApplication", Name="Bare", ApplicationIdentifier="x"))
    bare = named(state, "PartnerApplication", "Bare")
    assert (bare["Realm"], bare["UseAuthServer"], bare["Enabled"]) == (None, True, True)  # type: ignore[index]
    assert fetched == []


MISSING = "Cannot process command because of one or more missing mandatory parameters: "


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"AuthMetadataUrl": SKYPE_URL, "ApplicationIdentifier": "x"}, AMBIGUOUS),
        ({"AuthMetadataUrl": SKYPE_URL, "Realm": "x"}, AMBIGUOUS),
        ({"ApplicationIdentifier": "x", "TrustAnySSLCertificate": True}, AMBIGUOUS),
        ({}, AMBIGUOUS),  # neither form
        ({"Realm": "contoso.com"}, MISSING + "ApplicationIdentifier."),
        ({"TrustAnySSLCertificate": True}, MISSING + "AuthMetadataUrl."),
        # the reference's text names -UseAuthServer, but no syntax of New-PartnerApplication has it
        ({"AuthMetadataUrl": SKYPE_URL, "UseAuthServer": False},
         "A parameter cannot be found that matches parameter name 'UseAuthServer'."),
        ({"ApplicationIdentifier": "x", "UseAuthServer": True},
         "A parameter cannot be found that matches parameter name 'UseAuthServer'."),
    ],
)
def test_new_partner_application_parameter_sets(run: Runner, state: dict[str, Any], fetched: list[str],
                                                params: dict[str, Any], message: str) -> None:
    assert fails(run("New-PartnerApplication", Name="Lync", **params), "New-PartnerApplication", message)
    assert named(state, "PartnerApplication", "Lync") is None
    assert fetched == []


def test_new_partner_application_switch_given_false_still_chooses_its_set(run: Runner) -> None:
    # PowerShell binds -TrustAnySSLCertificate:$false like any other parameter: it is in the AuthMetadataUrl set.
    assert fails(run("New-PartnerApplication", Name="x", ApplicationIdentifier="x", TrustAnySSLCertificate=False),
                 "New-PartnerApplication", AMBIGUOUS)


def test_new_partner_application_errors(run: Runner, state: dict[str, Any], fetched: list[str]) -> None:
    cmdlet = "New-PartnerApplication"
    assert fails(run(cmdlet, Name="exchange online", ApplicationIdentifier="x"), cmdlet,
                 'PartnerApplication "exchange online" already exists.')
    assert fails(run(cmdlet, ApplicationIdentifier="x"), cmdlet,
                 "Cannot process command because of one or more missing mandatory parameters: Name.")
    assert fails(run(cmdlet, Name="Lync", AuthMetadataUrl=""), cmdlet,
                 "Cannot bind argument to parameter 'AuthMetadataUrl' because it is an empty string.")
    assert fails(run(cmdlet, Name="Lync", AuthMetadataUrl=MISSING_URL), cmdlet,
                 f"Couldn't download the authorization metadata from '{MISSING_URL}', or it isn't a valid metadata "
                 "document: HTTP 404")
    assert fails(run(cmdlet, Name="Lync", ApplicationIdentifier="x", LinkedAccount="nobody"), cmdlet,
                 user_not_found("nobody"))
    result = run(cmdlet, Name="Lync", ApplicationIdentifier="x", AccountType="Guest")
    assert not result.ok and "OrganizationalAccount, ConsumerAccount" in (result.error or "")
    result = run(cmdlet, Name="Lync", ApplicationIdentifier="x", Enabled="yes")
    assert not result.ok and "parameter 'Enabled'" in (result.error or "")
    assert [a["Name"] for a in objects(state, "PartnerApplication")] == BUILT_INS
    assert fetched == [MISSING_URL]


def test_set_partner_application_common_parameters(run: Runner, state: dict[str, Any], fetched: list[str]) -> None:
    add_account(run)
    assert ok(run("Set-PartnerApplication", Identity="Exchange Online", Enabled=True, LinkedAccount=ACCOUNT,
                  AcceptSecurityIdentifierInformation=True, AccountType="ConsumerAccount")) == ()
    app = named(state, "PartnerApplication", "Exchange Online")
    assert app is not None
    assert (app["Enabled"], app["LinkedAccount"], app["AcceptSecurityIdentifierInformation"], app["AccountType"]) == (
        True, ACCOUNT, True, "ConsumerAccount")
    assert done(run("Set-PartnerApplication", Identity="Exchange Online", LinkedAccount=None))
    assert app["LinkedAccount"] is None
    assert done(run("Set-PartnerApplication", Identity="exchange online", Name="EXO"))
    assert (app["Name"], app["Identity"]) == ("EXO", "EXO")
    assert fetched == []


def test_set_partner_application_identifier_form(run: Runner, state: dict[str, Any]) -> None:
    assert done(run("Set-PartnerApplication", Identity="Exchange Online", ApplicationIdentifier="abc"))
    assert done(run("Set-PartnerApplication", Identity="Exchange Online", Realm="contoso.com"))
    app = named(state, "PartnerApplication", "Exchange Online")
    assert (app["ApplicationIdentifier"], app["Realm"]) == ("abc", "contoso.com")  # type: ignore[index]


def test_set_partner_application_metadata_and_refresh(run: Runner, state: dict[str, Any], fetched: list[str]) -> None:
    ok(run("New-PartnerApplication", Name="Partner", AuthMetadataUrl=SHAREPOINT_URL))
    assert done(run("Set-PartnerApplication", Identity="Partner", AuthMetadataUrl=SKYPE_URL,
                    TrustAnySSLCertificate=True))
    app = named(state, "PartnerApplication", "Partner")
    assert app is not None
    assert (app["AuthMetadataUrl"], app["ApplicationIdentifier"], app["Realm"]) == (
        SKYPE_URL, estate.SKYPE_ID, "litwareinc.com")
    state["services"]["skype"]["realm"] = "contoso.com"  # what the document now says
    assert done(run("Set-PartnerApplication", Identity="Partner", RefreshAuthMetadata=True))
    assert app["Realm"] == "contoso.com"
    assert fetched == [SHAREPOINT_URL, SKYPE_URL, SKYPE_URL]


def test_set_partner_application_refuses_to_switch_forms(run: Runner, state: dict[str, Any],
                                                          fetched: list[str]) -> None:
    ok(run("New-PartnerApplication", Name="Lync", AuthMetadataUrl=SKYPE_URL))
    before = copy.deepcopy(objects(state, "PartnerApplication"))
    assert fails(run("Set-PartnerApplication", Identity="Lync", ApplicationIdentifier="x"), "Set-PartnerApplication",
                 'Partner application "Lync" was created with the AuthMetadataUrl parameter set and cannot be '
                 "switched to the ACSTrustApplication parameter set: remove it and create it again.")
    assert fails(run("Set-PartnerApplication", Identity="Exchange Online", AuthMetadataUrl=SKYPE_URL),
                 "Set-PartnerApplication",
                 'Partner application "Exchange Online" was created with the ACSTrustApplication parameter set and '
                 "cannot be switched to the AuthMetadataUrl parameter set: remove it and create it again.")
    assert fails(run("Set-PartnerApplication", Identity="Exchange Online", RefreshAuthMetadata=True),
                 "Set-PartnerApplication", 'Partner application "Exchange Online" has no AuthMetadataUrl to refresh.')
    assert objects(state, "PartnerApplication") == before
    assert fetched == [SKYPE_URL]


@pytest.mark.parametrize(
    "params",
    [
        {"AuthMetadataUrl": SKYPE_URL, "Realm": "x"},
        {"AuthMetadataUrl": SKYPE_URL, "RefreshAuthMetadata": True},
        {"ApplicationIdentifier": "x", "RefreshAuthMetadata": True},
        {"TrustAnySSLCertificate": True, "ApplicationIdentifier": "x"},
        {"Realm": "x", "RefreshAuthMetadata": False},  # a switch given as $false is still bound
    ],
)
def test_set_partner_application_parameter_sets(run: Runner, state: dict[str, Any], fetched: list[str],
                                                params: dict[str, Any]) -> None:
    before = copy.deepcopy(objects(state, "PartnerApplication"))
    assert fails(run("Set-PartnerApplication", Identity="Exchange Online", **params), "Set-PartnerApplication",
                 AMBIGUOUS)
    assert objects(state, "PartnerApplication") == before
    assert fetched == []


def test_set_partner_application_trust_any_alone_is_accepted(run: Runner, state: dict[str, Any]) -> None:
    before = copy.deepcopy(objects(state, "PartnerApplication"))
    assert done(run("Set-PartnerApplication", Identity="Exchange Online", TrustAnySSLCertificate=True))
    assert objects(state, "PartnerApplication") == before


def test_set_partner_application_errors(run: Runner, state: dict[str, Any]) -> None:
    cmdlet = "Set-PartnerApplication"
    ok(run("New-PartnerApplication", Name="Lync", AuthMetadataUrl=SKYPE_URL))
    before = copy.deepcopy(objects(state, "PartnerApplication"))
    assert fails(run(cmdlet, Identity="SharePoint", Enabled=True), cmdlet, not_found("SharePoint"))
    assert fails(run(cmdlet, Enabled=True), cmdlet,
                 "Cannot process command because of one or more missing mandatory parameters: Identity.")
    assert fails(run(cmdlet, Identity="Lync", AuthMetadataUrl=MISSING_URL, Enabled=False), cmdlet,
                 f"Couldn't download the authorization metadata from '{MISSING_URL}', or it isn't a valid metadata "
                 "document: HTTP 404")
    assert fails(run(cmdlet, Identity="Lync", LinkedAccount="ghost", Enabled=False), cmdlet, user_not_found("ghost"))
    assert fails(run(cmdlet, Identity="Lync", Name="exchange online"), cmdlet,
                 'PartnerApplication "exchange online" already exists.')
    assert objects(state, "PartnerApplication") == before


def test_remove_partner_application(run: Runner, state: dict[str, Any]) -> None:
    assert ok(run("Remove-PartnerApplication", Identity="EXCHANGE ONLINE", Confirm=False)) == ()
    assert [a["Name"] for a in objects(state, "PartnerApplication")] == BUILT_INS[1:]
    assert fails(run("Remove-PartnerApplication", Identity="Exchange Online"), "Remove-PartnerApplication",
                 not_found("Exchange Online"))
    assert fails(run("Remove-PartnerApplication"), "Remove-PartnerApplication",
                 "Cannot process command because of one or more missing mandatory parameters: Identity.")


def test_new_and_get_auth_server(run: Runner, state: dict[str, Any], fetched: list[str]) -> None:
    assert ok(run("Get-AuthServer")) == ()
    output = ok(run("New-AuthServer", Name="ACS", AuthMetadataUrl=ACS_URL, DomainName="litwareinc.com"))
    assert fetched == [ACS_URL]
    assert output == ({
        "Name": "ACS", "Identity": "ACS", "AuthMetadataUrl": ACS_URL, "Type": "MicrosoftACS", "Enabled": True,
        "DomainName": ["litwareinc.com"], "IssuerIdentifier": estate.ACS_ID, "Realm": estate.LAB_TENANT_ID,
        "TokenIssuingEndpoint": None, "AuthorizationEndpoint": None, "ApplicationIdentifier": None,
        "GraphBaseUrl": None, "IsDefaultAuthorizationEndpoint": False,
    },)
    assert ok(run("New-AuthServer", Name="EvoSTS", AuthMetadataUrl=ENTRA_URL, Type="azuread", Enabled=False,
                  DomainName=["a.com", "b.com"], TrustAnySSLCertificate=True))
    evo = named(state, "AuthServer", "evosts")
    assert evo is not None
    assert (evo["Type"], evo["Enabled"], evo["DomainName"]) == ("AzureAD", False, ["a.com", "b.com"])
    assert evo["IssuerIdentifier"].startswith("https://sts.windows.net/") and evo["Realm"]  # from federation XML
    assert [s["Name"] for s in ok(run("Get-AuthServer"))] == ["ACS", "EvoSTS"]
    assert ok(run("Get-AuthServer", Identity="acs")) == output
    assert fails(run("Get-AuthServer", Identity="ADFS"), "Get-AuthServer", not_found("ADFS"))


def test_auth_server_type_follows_the_document_or_must_fit_it(run: Runner, state: dict[str, Any]) -> None:
    ok(run("New-AuthServer", Name="Entra", AuthMetadataUrl=ENTRA_URL))  # no -Type: federation XML of a tenant
    ok(run("New-AuthServer", Name="FS", AuthMetadataUrl=ADFS_URL, Type="ADFS"))
    assert [s["Type"] for s in objects(state, "AuthServer")] == ["AzureAD", "ADFS"]
    assert fails(run("New-AuthServer", Name="x", AuthMetadataUrl=ACS_URL, Type="AzureAD"), "New-AuthServer",
                 f"The authorization metadata at '{ACS_URL}' isn't federation metadata XML, which an auth server of "
                 "type AzureAD reads.")
    assert fails(run("New-AuthServer", Name="x", AuthMetadataUrl=ENTRA_URL, Type="MicrosoftACS"), "New-AuthServer",
                 f"The authorization metadata at '{ENTRA_URL}' isn't JSON metadata, which an auth server of type "
                 "MicrosoftACS reads.")
    assert fails(run("Set-AuthServer", Identity="Entra", AuthMetadataUrl=ACS_URL), "Set-AuthServer",
                 f"The authorization metadata at '{ACS_URL}' isn't federation metadata XML, which an auth server of "
                 "type AzureAD reads.")


def test_app_secret_auth_server_and_set_only_parameters(run: Runner, state: dict[str, Any],
                                                       fetched: list[str]) -> None:
    app_id = "6f1d2b3c-4d5e-4f60-9b0c-1d2e3f4a5b6c"
    ok(run("New-AuthServer", Name="LinkedIn", Type="LinkedIn", ApplicationIdentifier=app_id, Enabled=False))
    server = named(state, "AuthServer", "LinkedIn")
    assert server is not None and fetched == []
    assert (server["Type"], server["ApplicationIdentifier"], server["AuthMetadataUrl"]) == ("LinkedIn", app_id, None)
    ok(run("New-AuthServer", Name="EvoSts", AuthMetadataUrl=ENTRA_URL, Type="AzureAD"))
    assert done(run("Set-AuthServer", Identity="EvoSts", GraphBaseUrl="https://graph"))  # AuthMetadataUrl set
    # ConfigureExchangeHybridApplication.ps1's call (AppSecret set), then the NativeClientAuthServer set
    assert done(run("Set-AuthServer", Identity="EvoSts", ApplicationIdentifier=app_id, DomainName=["contoso.com"]))
    assert done(run("Set-AuthServer", Identity="EvoSts", IsDefaultAuthorizationEndpoint=True))
    evo = named(state, "AuthServer", "EvoSts")
    assert evo is not None
    assert (evo["ApplicationIdentifier"], evo["DomainName"], evo["IsDefaultAuthorizationEndpoint"],
            evo["GraphBaseUrl"]) == (app_id, ["contoso.com"], True, "https://graph")
    assert fails(run("Set-AuthServer", Identity="LinkedIn", RefreshAuthMetadata=True), "Set-AuthServer",
                 'Auth server "LinkedIn" has no AuthMetadataUrl to refresh.')
    assert fails(run("Set-AuthServer", Identity="EvoSts", ApplicationIdentifier=app_id,
                     IsDefaultAuthorizationEndpoint=True), "Set-AuthServer", AMBIGUOUS)


def test_new_auth_server_errors(run: Runner, state: dict[str, Any]) -> None:
    cmdlet = "New-AuthServer"
    ok(run(cmdlet, Name="ACS", AuthMetadataUrl=ACS_URL))
    assert fails(run(cmdlet, Name="acs", AuthMetadataUrl=ACS_URL), cmdlet, 'AuthServer "acs" already exists.')
    assert fails(run(cmdlet, Name="x"), cmdlet, AMBIGUOUS)  # three sets, none complete
    assert fails(run(cmdlet, Name="x", ApplicationIdentifier="y"), cmdlet,
                 "Cannot process command because of one or more missing mandatory parameters: Type.")
    assert fails(run(cmdlet, Name="x", GraphBaseUrl="https://graph"), cmdlet,
                 "Cannot process command because of one or more missing mandatory parameters: AuthMetadataUrl.")
    assert fails(run(cmdlet, Name="x", AuthMetadataUrl=MISSING_URL), cmdlet,
                 f"Couldn't download the authorization metadata from '{MISSING_URL}', or it isn't a valid metadata "
                 "document: HTTP 404")
    result = run(cmdlet, Name="x", AuthMetadataUrl=ACS_URL, Type="Kerberos")
    assert not result.ok and "ADFS, AzureAD, Facebook, LinkedIn, MicrosoftACS" in (result.error or "")
    assert fails(run(cmdlet, Name="x", AuthMetadataUrl=ACS_URL, DomainName=["a.com", ""]), cmdlet,
                 "Cannot bind argument to parameter 'DomainName' because it is an empty string.")
    assert fails(run(cmdlet, Name="x", AuthMetadataUrl=ACS_URL, IsDefaultAuthorizationEndpoint=True), cmdlet,
                 "A parameter cannot be found that matches parameter name 'IsDefaultAuthorizationEndpoint'.")
    assert [s["Name"] for s in objects(state, "AuthServer")] == ["ACS"]


def test_set_auth_server(run: Runner, state: dict[str, Any], fetched: list[str]) -> None:
    cmdlet = "Set-AuthServer"
    ok(run("New-AuthServer", Name="ACS", AuthMetadataUrl=ACS_URL))
    assert done(run(cmdlet, Identity="acs", Enabled=False, DomainName=["litwareinc.com", "contoso.com"], Name="EvoSTS"))
    server = named(state, "AuthServer", "EvoSTS")
    assert server is not None
    assert (server["Identity"], server["Enabled"], server["DomainName"]) == (
        "EvoSTS", False, ["litwareinc.com", "contoso.com"])
    assert done(run(cmdlet, Identity="EvoSTS", AuthMetadataUrl=SKYPE_URL))
    assert (server["AuthMetadataUrl"], server["IssuerIdentifier"], server["Realm"]) == (
        SKYPE_URL, estate.SKYPE_ID, "litwareinc.com")
    state["services"]["skype"]["realm"] = "contoso.com"
    assert done(run(cmdlet, Identity="EvoSTS", RefreshAuthMetadata=True))
    assert server["Realm"] == "contoso.com"
    assert done(run(cmdlet, Identity="EvoSTS", DomainName=None))
    assert server["DomainName"] == []
    assert fetched == [ACS_URL, SKYPE_URL, SKYPE_URL]


def test_set_auth_server_errors(run: Runner, state: dict[str, Any], fetched: list[str]) -> None:
    cmdlet = "Set-AuthServer"
    ok(run("New-AuthServer", Name="ACS", AuthMetadataUrl=ACS_URL))
    before = copy.deepcopy(objects(state, "AuthServer"))
    assert fails(run(cmdlet, Identity="ACS", AuthMetadataUrl=SKYPE_URL, RefreshAuthMetadata=True), cmdlet, AMBIGUOUS)
    assert fails(run(cmdlet, Identity="ADFS", Enabled=False), cmdlet, not_found("ADFS"))
    assert fails(run(cmdlet, Identity="ACS", AuthMetadataUrl=MISSING_URL, Enabled=False), cmdlet,
                 f"Couldn't download the authorization metadata from '{MISSING_URL}', or it isn't a valid metadata "
                 "document: HTTP 404")
    assert fails(run(cmdlet, Identity="ACS", Type="ADFS"), cmdlet,
                 "A parameter cannot be found that matches parameter name 'Type'.")
    assert objects(state, "AuthServer") == before
    assert fetched == [ACS_URL, MISSING_URL]


def test_remove_auth_server(run: Runner, state: dict[str, Any]) -> None:
    ok(run("New-AuthServer", Name="ACS", AuthMetadataUrl=ACS_URL))
    assert ok(run("Remove-AuthServer", Identity="Acs")) == ()
    assert objects(state, "AuthServer") == []
    assert fails(run("Remove-AuthServer", Identity="ACS"), "Remove-AuthServer", not_found("ACS"))


# --- AuthConfig ---------------------------------------------------------------------------------


def config(state: Mapping[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = objects(state, "AuthConfig")
    return found


def test_get_auth_config(run: Runner, state: dict[str, Any]) -> None:
    (output,) = ok(run("Get-AuthConfig"))
    # as recorded (GetAuthConfig.xml): an empty thumbprint is "", an unset date Nil
    assert output == {**config(state), "PreviousCertificateThumbprint": "", "NextCertificateThumbprint": ""}
    assert (output["Name"], output["Identity"]) == ("Auth Configuration", "Auth Configuration")
    assert output["CurrentCertificateThumbprint"] == thumbprint_of(state, "exchange")
    assert output["NextCertificateEffectiveDate"] is None
    assert fails(run("Get-AuthConfig", Identity="Auth Configuration"), "Get-AuthConfig",
                 "A parameter cannot be found that matches parameter name 'Identity'.")


def test_set_current_certificate_keeps_the_old_one_as_previous(run: Runner, state: dict[str, Any]) -> None:
    old = thumbprint_of(state, "exchange")
    assert done(run("Set-AuthConfig", CertificateThumbprint=NEW_THUMBPRINT.lower(), Force=True))
    assert (config(state)["CurrentCertificateThumbprint"], config(state)["PreviousCertificateThumbprint"]) == (
        NEW_THUMBPRINT, old)
    assert done(run("Set-AuthConfig", CertificateThumbprint=NEW_THUMBPRINT))  # the same one: nothing moves
    assert config(state)["PreviousCertificateThumbprint"] == old


@pytest.mark.parametrize("value", ["ABC", NEW_THUMBPRINT + "0", NEW_THUMBPRINT[:-1] + "G",
                                   " ".join(NEW_THUMBPRINT[i:i + 2] for i in range(0, 40, 2)), 42])
def test_bad_thumbprints(run: Runner, state: dict[str, Any], value: str) -> None:
    before = copy.deepcopy(config(state))
    assert fails(run("Set-AuthConfig", CertificateThumbprint=value), "Set-AuthConfig",
                 f'The certificate thumbprint "{value}" isn\'t valid: a thumbprint is 40 hexadecimal characters.')
    assert fails(run("Set-AuthConfig", NewCertificateThumbprint=value, NewCertificateEffectiveDate="2030-01-01"),
                 "Set-AuthConfig",
                 f'The certificate thumbprint "{value}" isn\'t valid: a thumbprint is 40 hexadecimal characters.')
    assert config(state) == before


def test_empty_thumbprint(run: Runner) -> None:
    assert fails(run("Set-AuthConfig", CertificateThumbprint=""), "Set-AuthConfig",
                 "Cannot bind argument to parameter 'CertificateThumbprint' because it is an empty string.")


def test_set_service_name_and_realm(run: Runner, state: dict[str, Any]) -> None:
    assert done(run("Set-AuthConfig", ServiceName="abc", Realm="litwareinc.com"))
    assert (config(state)["ServiceName"], config(state)["Realm"]) == ("abc", "litwareinc.com")
    assert done(run("Set-AuthConfig", Realm=None))
    assert config(state)["Realm"] == ""


@pytest.mark.parametrize(
    "params",
    [
        {"CertificateThumbprint": NEW_THUMBPRINT, "ServiceName": "x"},
        {"NewCertificateThumbprint": NEW_THUMBPRINT, "NewCertificateEffectiveDate": "2030-01-01",
         "PublishCertificate": True},
        {"CertificateThumbprint": NEW_THUMBPRINT, "ClearPreviousCertificate": True},
        {"Realm": "x", "Force": True},
        {"Force": True},
    ],
)
def test_set_auth_config_parameter_sets(run: Runner, state: dict[str, Any], params: dict[str, Any]) -> None:
    before = copy.deepcopy(config(state))
    assert fails(run("Set-AuthConfig", **params), "Set-AuthConfig", AMBIGUOUS)
    assert config(state) == before


def test_stage_then_publish_then_clear_previous(run: Runner, state: dict[str, Any]) -> None:
    old = thumbprint_of(state, "exchange")
    later = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=2)).replace(microsecond=0)
    assert done(run("Set-AuthConfig", NewCertificateThumbprint=NEW_THUMBPRINT,
                    NewCertificateEffectiveDate=later.isoformat(), SkipImmediateCertificateDeployment=True))
    (staged,) = ok(run("Get-AuthConfig"))
    assert (staged["CurrentCertificateThumbprint"], staged["NextCertificateThumbprint"]) == (old, NEW_THUMBPRINT)
    assert staged["NextCertificateEffectiveDate"] == later.isoformat()
    assert done(run("Set-AuthConfig", PublishCertificate=True))
    assert (config(state)["CurrentCertificateThumbprint"], config(state)["PreviousCertificateThumbprint"]) == (
        NEW_THUMBPRINT, old)
    assert (config(state)["NextCertificateThumbprint"], config(state)["NextCertificateEffectiveDate"]) == (None, None)
    assert done(run("Set-AuthConfig", ClearPreviousCertificate=True))
    assert config(state)["PreviousCertificateThumbprint"] is None


def test_publish_and_clear_together(run: Runner, state: dict[str, Any]) -> None:
    ok(run("Set-AuthConfig", NewCertificateThumbprint=NEW_THUMBPRINT, NewCertificateEffectiveDate="2099-01-01"))
    assert done(run("Set-AuthConfig", PublishCertificate=True, ClearPreviousCertificate=True))
    assert (config(state)["CurrentCertificateThumbprint"], config(state)["PreviousCertificateThumbprint"]) == (
        NEW_THUMBPRINT, None)


def test_publish_without_a_staged_certificate(run: Runner, state: dict[str, Any]) -> None:
    before = copy.deepcopy(config(state))
    assert fails(run("Set-AuthConfig", PublishCertificate=True, ClearPreviousCertificate=True), "Set-AuthConfig",
                 "There is no next certificate to publish: stage one with -NewCertificateThumbprint and "
                 "-NewCertificateEffectiveDate first.")
    assert config(state) == before


def test_staged_certificate_is_promoted_on_read_once_its_date_passes(run: Runner, state: dict[str, Any],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    old = thumbprint_of(state, "exchange")
    ok(run("Set-AuthConfig", NewCertificateThumbprint=NEW_THUMBPRINT, NewCertificateEffectiveDate="2031-04-17",
           Force=True))
    assert config(state)["NextCertificateEffectiveDate"] == "2031-04-17T00:00:00+00:00"
    assert ok(run("Get-AuthConfig"))[0]["CurrentCertificateThumbprint"] == old
    monkeypatch.setattr(exchange, "utc_now", lambda: datetime.datetime(2031, 4, 17, 0, 0, 1, tzinfo=datetime.UTC))
    (promoted,) = ok(run("Get-AuthConfig"))
    assert (promoted["CurrentCertificateThumbprint"], promoted["PreviousCertificateThumbprint"]) == (
        NEW_THUMBPRINT, old)
    assert (promoted["NextCertificateThumbprint"], promoted["NextCertificateEffectiveDate"]) == ("", None)
    assert config(state) == {**promoted, "NextCertificateThumbprint": None}  # kept, not only reported


def test_past_effective_date_is_promoted_by_the_real_clock(run: Runner, state: dict[str, Any]) -> None:
    ok(run("Set-AuthConfig", NewCertificateThumbprint=NEW_THUMBPRINT,
           NewCertificateEffectiveDate="2020-01-01T08:00:00+02:00"))
    assert config(state)["NextCertificateEffectiveDate"] == "2020-01-01T06:00:00+00:00"  # stored in UTC
    assert ok(run("Get-AuthConfig"))[0]["CurrentCertificateThumbprint"] == NEW_THUMBPRINT


def test_staging_needs_thumbprint_and_a_valid_date(run: Runner, state: dict[str, Any]) -> None:
    before = copy.deepcopy(config(state))
    assert fails(run("Set-AuthConfig", NewCertificateThumbprint=NEW_THUMBPRINT), "Set-AuthConfig",
                 "Cannot process command because of one or more missing mandatory parameters: "
                 "NewCertificateEffectiveDate.")
    assert fails(run("Set-AuthConfig", NewCertificateEffectiveDate="2030-01-01"), "Set-AuthConfig",
                 "Cannot process command because of one or more missing mandatory parameters: "
                 "NewCertificateThumbprint.")
    assert fails(run("Set-AuthConfig", NewCertificateThumbprint=NEW_THUMBPRINT, NewCertificateEffectiveDate="soon"),
                 "Set-AuthConfig",
                 "Cannot bind parameter 'NewCertificateEffectiveDate'. Cannot convert value \"soon\" to type "
                 '"System.DateTime".')
    assert config(state) == before


# --- LinkedUser ---------------------------------------------------------------------------------


def test_linked_users(run: Runner, state: dict[str, Any]) -> None:
    output = ok(run("New-LinkedUser", Name=ACCOUNT, UserPrincipalName=UPN))
    assert output == ({"Name": ACCOUNT, "Identity": ACCOUNT, "UserPrincipalName": UPN},)
    ok(run("New-LinkedUser", Name="SharePointEnterprise-ApplicationAccount"))
    assert [u["UserPrincipalName"] for u in ok(run("Get-LinkedUser"))] == [None, None, UPN, None]
    assert [u["Name"] for u in ok(run("Get-LinkedUser", Anr="lync"))] == [ACCOUNT]
    assert [u["Name"] for u in ok(run("Get-LinkedUser", SortBy="Name", ResultSize=2))] == [
        "Exchange Online-ApplicationAccount", ACCOUNT]
    assert fails(run("Get-LinkedUser", Filter="Name -like 'x*'"), "Get-LinkedUser",
                 "The lab does not evaluate -Filter.")
    assert fails(run("Get-LinkedUser", Identity=ACCOUNT, Anr="x"), "Get-LinkedUser", AMBIGUOUS)
    assert ok(run("Get-LinkedUser", Identity=ACCOUNT.upper())) == output
    assert fails(run("Get-LinkedUser", Identity="nobody"), "Get-LinkedUser", not_found("nobody"))
    assert ok(run("Remove-LinkedUser", Identity="sharepointenterprise-applicationaccount")) == ()
    assert [u["Name"] for u in objects(state, "LinkedUser")][-1] == ACCOUNT
    assert fails(run("Remove-LinkedUser", Identity="SharePointEnterprise-ApplicationAccount"), "Remove-LinkedUser",
                 not_found("SharePointEnterprise-ApplicationAccount"))


def test_new_linked_user_errors(run: Runner, state: dict[str, Any]) -> None:
    cmdlet = "New-LinkedUser"
    ok(run(cmdlet, Name=ACCOUNT, UserPrincipalName=UPN))
    assert fails(run(cmdlet, Name=ACCOUNT.lower()), cmdlet, f'LinkedUser "{ACCOUNT.lower()}" already exists.')
    assert fails(run(cmdlet, Name="other", UserPrincipalName=UPN.upper()), cmdlet,
                 f'UserPrincipalName "{UPN.upper()}" already exists.')
    assert fails(run(cmdlet, Name="other", UserPrincipalName="no-domain"), cmdlet,
                 '"no-domain" isn\'t a valid user principal name: use the form user@domain.')
    assert fails(run(cmdlet, UserPrincipalName="a@b"), cmdlet,
                 "Cannot process command because of one or more missing mandatory parameters: Name.")
    assert [u["Name"] for u in objects(state, "LinkedUser")][2:] == [ACCOUNT]


# --- ManagementRoleAssignment -------------------------------------------------------------------


def test_role_assignments(run: Runner, state: dict[str, Any]) -> None:
    add_account(run)
    output = ok(run("New-ManagementRoleAssignment", Role="userapplication", User=UPN))
    assert output == ({"Name": f"UserApplication-{ACCOUNT}", "Identity": f"UserApplication-{ACCOUNT}",
                       "Role": "UserApplication", "RoleAssigneeName": ACCOUNT, "RoleAssigneeType": "User",
                       "AssignmentMethod": "Direct", "Enabled": True, "Delegating": False,
                       "ConfigWriteScope": "OrganizationConfig", "RecipientWriteScope": "Organization"},)
    ok(run("New-ManagementRoleAssignment", Role="Mailbox Search", User=ACCOUNT, Name="Search for Lync"))
    assert [a["Name"] for a in ok(run("Get-ManagementRoleAssignment"))] == [f"UserApplication-{ACCOUNT}",
                                                                           "Search for Lync"]
    assert [a["Role"] for a in ok(run("Get-ManagementRoleAssignment", Role="mailbox search"))] == ["Mailbox Search"]
    assert len(ok(run("Get-ManagementRoleAssignment", RoleAssignee=UPN))) == 2
    assert ok(run("Get-ManagementRoleAssignment", Identity="search for lync"))[0]["Role"] == "Mailbox Search"
    assert len(ok(run("Get-ManagementRoleAssignment", RoleAssignee=UPN, AssignmentMethod=["Direct"],
                      RoleAssigneeType="User", Enabled=True, Delegating=False, GetEffectiveUsers=True))) == 2
    assert ok(run("Get-ManagementRoleAssignment", CustomConfigWriteScope="Some scope")) == ()  # no scopes in the lab
    assert ok(run("Get-ManagementRoleAssignment", Exclusive=True)) == ()
    assert fails(run("Get-ManagementRoleAssignment", Identity="x", RoleAssignee=UPN), "Get-ManagementRoleAssignment",
                 AMBIGUOUS)
    assert ok(run("Remove-ManagementRoleAssignment", Identity="Search for Lync")) == ()
    assert [a["Role"] for a in objects(state, "ManagementRoleAssignment")] == ["UserApplication"]


def test_role_assignment_names_are_cut_like_exchange(run: Runner, state: dict[str, Any]) -> None:
    long_a = "SharePointEnterprise-ApplicationAccount-A"
    long_b = "SharePointEnterprise-ApplicationAccount-B"
    add_account(run, long_a)
    add_account(run, long_b)
    first = ok(run("New-ManagementRoleAssignment", Role="TeamMailboxLifecycleApplication", User=long_a))[0]
    assert first["Name"] == f"TeamMailboxLifecycleApplication-{long_a}"[:64] and len(first["Name"]) == 64
    second = ok(run("New-ManagementRoleAssignment", Role="TeamMailboxLifecycleApplication", User=long_b))[0]
    assert second["Name"] == first["Name"][:63] + "1"  # the cut name was taken
    assert second["RoleAssigneeName"] == long_b


def test_role_assignment_errors(run: Runner, state: dict[str, Any]) -> None:
    cmdlet = "New-ManagementRoleAssignment"
    add_account(run, ACCOUNT, "UserApplication")
    assert fails(run(cmdlet, Role="UserApplication", User=UPN), cmdlet,
                 f'The role "UserApplication" is already assigned to "{ACCOUNT}" by the role assignment '
                 f'"UserApplication-{ACCOUNT}".')
    assert fails(run(cmdlet, Role="GodMode", User=ACCOUNT), cmdlet, not_found("GodMode"))
    assert fails(run(cmdlet, Role="ArchiveApplication", User="ghost"), cmdlet, user_not_found("ghost"))
    assert fails(run(cmdlet, Role="ArchiveApplication"), cmdlet,
                 "Cannot process command because of one or more missing mandatory parameters: User.")
    assert fails(run(cmdlet, Role="ArchiveApplication", User=ACCOUNT, Name=f"UserApplication-{ACCOUNT}"), cmdlet,
                 f'ManagementRoleAssignment "UserApplication-{ACCOUNT}" already exists.')
    assert fails(run(cmdlet, Role="ArchiveApplication", User=ACCOUNT, CustomRecipientWriteScope="Sales"), cmdlet,
                 not_found("Sales"))
    assert fails(run(cmdlet, Role="ArchiveApplication", User=ACCOUNT, App="x"), cmdlet,
                 "A parameter cannot be found that matches parameter name 'App'.")  # only the User set is declared
    assert fails(run("Get-ManagementRoleAssignment", RoleAssignee="ghost"), "Get-ManagementRoleAssignment",
                 user_not_found("ghost"))
    assert fails(run("Get-ManagementRoleAssignment", Identity="nope"), "Get-ManagementRoleAssignment",
                 not_found("nope"))
    assert fails(run("Remove-ManagementRoleAssignment", Identity="nope"), "Remove-ManagementRoleAssignment",
                 not_found("nope"))
    assert len(objects(state, "ManagementRoleAssignment")) == 1


def test_removing_a_linked_user_leaves_what_names_it(run: Runner, state: dict[str, Any]) -> None:
    add_account(run, ACCOUNT, "UserApplication")
    ok(run("New-PartnerApplication", Name="Lync", ApplicationIdentifier=estate.SKYPE_ID, LinkedAccount=ACCOUNT))
    ok(run("Remove-LinkedUser", Identity=ACCOUNT))
    assert named(state, "PartnerApplication", "Lync")["LinkedAccount"] == ACCOUNT  # type: ignore[index]
    assert objects(state, "ManagementRoleAssignment")[0]["RoleAssigneeName"] == ACCOUNT


# --- iisreset -----------------------------------------------------------------------------------


def test_iisreset_counts_per_server(state: dict[str, Any], context: CmdletContext) -> None:
    commands = [iisreset("atl-exchange-001"),
                Command("IISRESET", native=True, arguments=("ATL-EXCHANGE-002", "/noforce")),
                iisreset("/restart", "atl-exchange-001"), iisreset()]  # no computer name: the host itself
    results = execute_batch(state, EXCHANGE, commands, stop_on_error=True, context=context)
    assert [r.ok for r in results] == [True, True, True, True]
    assert all(r.output == () for r in results)
    host = state["hosts"][EXCHANGE]
    assert host["iisResets"] == {"atl-exchange-001": 3, "atl-exchange-002": 1}
    assert host["calls"] == {"iisreset": 4}


def test_iisreset_errors(state: dict[str, Any], context: CmdletContext) -> None:
    def reset(command: Command) -> CommandResult:
        return run_command(state, EXCHANGE, command, context)

    assert fails(reset(iisreset("atl-cs-001")), "iisreset", "Access denied / server not found")
    assert fails(reset(iisreset("atl-exchange-001", "atl-exchange-002")), "iisreset",
                 "iisreset takes one computer name, not 2: atl-exchange-001 atl-exchange-002")
    # not a cmdlet: the documented syntax has no named parameters, so the old `iisreset -Server x` form is refused
    assert fails(reset(Command("iisreset", {"Server": "atl-exchange-001"})), "iisreset",
                 "A parameter cannot be found that matches parameter name 'Server'.")
    assert state["hosts"][EXCHANGE]["iisResets"] == {}
    del state["hosts"][EXCHANGE]["servers"]  # a host that lists no servers
    assert fails(reset(iisreset("atl-exchange-001")), "iisreset", "Access denied / server not found")


def test_iisreset_needs_the_host_record(state: dict[str, Any]) -> None:
    handler = platform("exchange").cmdlets["iisreset"]
    context = CmdletContext(fetch=lambda url: pytest.fail("no download expected"), arguments=("atl-exchange-001",))
    # no state: not run through run_command
    with pytest.raises(CmdletError, match="iisreset : Access denied / server not found"):
        handler("iisreset", {}, state["hosts"][EXCHANGE]["objects"], context)


# --- every call is bound against the documented syntax ---------------------------------------------


def test_the_platform_binds_against_the_declared_syntax() -> None:
    plat = platform("exchange")
    assert sorted(plat.syntax) == sorted([*EXCHANGE_CMDLETS, "New-ExchangeCertificate", "Get-ExchangeCertificate"])
    assert plat.syntax["iisreset"].native
    assert plat.syntax["Set-AuthConfig"].source == (
        "MicrosoftDocs/office-docs-powershell: exchange/exchange-ps/ExchangePowerShell/Set-AuthConfig.md")
    assert "*unconfirmed*" in plat.syntax["New-LinkedUser"].source


@pytest.mark.parametrize(
    ("cmdlet", "params"),
    [
        ("Set-AuthConfig", {"Realm": "x", "Force": True}),  # -Force is not in the AuthConfigSettings set
        ("Set-AuthConfig", {"CertificateThumbprint": NEW_THUMBPRINT, "NewCertificateThumbprint": NEW_THUMBPRINT}),
        ("New-AuthServer", {"Name": "x", "AuthMetadataUrl": ACS_URL, "ApplicationIdentifier": "y"}),
        ("New-AuthServer", {"Name": "x", "GraphBaseUrl": "g", "Type": "AzureAD", "AuthMetadataUrl": ACS_URL}),
        ("Set-AuthServer", {"Identity": "x", "GraphBaseUrl": "g", "IsDefaultAuthorizationEndpoint": True}),
        ("Set-AuthServer", {"Identity": "x", "RefreshAuthMetadata": True, "AuthMetadataUrl": ACS_URL}),
        ("Set-PartnerApplication", {"Identity": "x", "AuthMetadataUrl": ACS_URL, "ApplicationIdentifier": "y"}),
        ("New-PartnerApplication", {"Name": "x", "AuthMetadataUrl": ACS_URL, "Realm": "y"}),
        ("Get-LinkedUser", {"Identity": "x", "Anr": "y"}),
        ("Get-ManagementRoleAssignment", {"Identity": "x", "AssignmentMethod": ["Direct"]}),
    ],
)
def test_calls_outside_every_documented_set_are_refused_before_anything_runs(
        run: Runner, state: dict[str, Any], fetched: list[str], cmdlet: str, params: dict[str, Any]) -> None:
    before = copy.deepcopy(state["hosts"][EXCHANGE]["objects"])
    assert fails(run(cmdlet, **params), cmdlet, AMBIGUOUS)
    assert state["hosts"][EXCHANGE]["objects"] == before and fetched == []


@pytest.mark.parametrize(
    ("cmdlet", "params", "message"),
    [
        ("Set-AuthServer", {"Identity": "x", "Type": "ADFS"},
         "A parameter cannot be found that matches parameter name 'Type'."),  # Type only on New
        ("Set-AuthConfig", {"Identity": "Auth Configuration", "Realm": "x"},
         "A parameter cannot be found that matches parameter name 'Identity'."),
        ("Remove-PartnerApplication", {"Identity": "x", "Force": True},
         "A parameter cannot be found that matches parameter name 'Force'."),
        ("Set-PartnerApplication", {"Identity": "Exchange Online", "Enabled": "true"},
         "Cannot process argument transformation on parameter 'Enabled'. Cannot convert value \"System.String\" to "
         "type \"System.Boolean\". Boolean parameters accept only Boolean values and numbers, such as $True, $False, "
         "1 or 0."),
    ],
)
def test_parameters_outside_the_syntax_are_refused(run: Runner, cmdlet: str, params: dict[str, Any],
                                                   message: str) -> None:
    assert fails(run(cmdlet, **params), cmdlet, message)


def test_injected_failure_on_an_exchange_cmdlet(run: Runner, state: dict[str, Any]) -> None:
    state["failures"] = [{"host": EXCHANGE, "cmdlet": "new-partnerapplication", "identity": None, "times": 1,
                          "message": "Active Directory operation failed on dc1.litwareinc.com."}]
    assert fails(run("New-PartnerApplication", Name="x", ApplicationIdentifier="x"), "New-PartnerApplication",
                 "Active Directory operation failed on dc1.litwareinc.com.")
    assert ok(run("New-PartnerApplication", Name="x", ApplicationIdentifier="x"))


# --- lab administration of the Exchange host ----------------------------------------------------


def test_show_lists_the_exchange_host_and_links(lab_state: Path) -> None:
    view = admin.show_lab(lab_state)
    exchange_view = view["hosts"][EXCHANGE]
    assert exchange_view["platform"] == "exchange"
    assert (exchange_view["skype"], exchange_view["service"], exchange_view["iisResets"]) == (POOL, "exchange", {})
    assert exchange_view["servers"] == list(estate.EXCHANGE_SERVERS)
    assert exchange_view["objects"]["AuthConfig"]["Identity"] == "Auth Configuration"
    assert view["hosts"][POOL]["exchange"] == EXCHANGE
    assert "exchange" not in view["hosts"]["fab-cs-001"]


def test_lab_set_and_remove_exchange_objects(lab_state: Path) -> None:
    updated = admin.set_object(lab_state, EXCHANGE, "authconfig", "Auth Configuration",
                               {"CurrentCertificateThumbprint": None})
    assert updated["CurrentCertificateThumbprint"] is None and updated["Identity"] == "Auth Configuration"
    assert admin.set_object(lab_state, EXCHANGE, "AuthConfig", "Global", {"Realm": "x"})["Realm"] == "x"
    with pytest.raises(ReconcilerError, match="one instance"):
        admin.set_object(lab_state, EXCHANGE, "AuthConfig", "Other", {"Realm": "x"})
    renamed = admin.set_object(lab_state, EXCHANGE, "PartnerApplication", "exchange online", {"Name": "EXO"})
    assert (renamed["Name"], renamed["Identity"]) == ("EXO", "EXO")
    with pytest.raises(ReconcilerError, match="no property 'Colour'"):
        admin.set_object(lab_state, EXCHANGE, "PartnerApplication", "EXO", {"Colour": "red"})
    admin.remove_object(lab_state, EXCHANGE, "PartnerApplication", "EXO")
    remaining = LabStore(lab_state).read()["hosts"][EXCHANGE]["objects"]["PartnerApplication"]
    assert [a["Name"] for a in remaining] == BUILT_INS[1:]


def test_seed_an_exchange_host_with_links(lab_state: Path) -> None:
    admin.seed_lab(lab_state, {"hosts": {
        "con-exchange-001": {"platform": "exchange", "service": "exchange", "skype": None,
                             "servers": ["con-exchange-001"], "mailboxes": ["sip:a@contoso.com"],
                             "LinkedUser": [{"Name": "acct"}],
                             "AuthConfig": {"ServiceName": estate.EXCHANGE_ID, "Realm": "contoso.com"}},
        "fab-cs-001": {"exchange": "con-exchange-001"},
    }})
    saved = LabStore(lab_state).read()["hosts"]
    record = saved["con-exchange-001"]
    assert (record["platform"], record["service"], record["skype"]) == ("exchange", "exchange", None)
    assert (record["servers"], record["mailboxes"]) == (["con-exchange-001"], ["sip:a@contoso.com"])
    assert record["objects"]["LinkedUser"] == [{"Name": "acct", "Identity": "acct", "UserPrincipalName": None}]
    assert record["objects"]["AuthConfig"]["Identity"] == "Auth Configuration"
    assert record["objects"]["PartnerApplication"] == []
    assert saved["fab-cs-001"]["exchange"] == "con-exchange-001"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"servers": "atl-exchange-001"}, "must be a list of names"),
        ({"mailboxes": ["", "x"]}, "must be a list of names"),
        ({"service": "nope"}, "must name a service"),
        ({"skype": 3}, "must be a name"),
        ({"LinkedUser": [{"UserPrincipalName": "a@b"}]}, "needs a Name"),
        ({"AuthServer": [{"Name": "a", "Colour": "red"}]}, "no property 'Colour'"),
    ],
)
def test_bad_exchange_seed_changes_nothing(lab_state: Path, spec: dict[str, Any], message: str) -> None:
    before = LabStore(lab_state).read()
    with pytest.raises(ReconcilerError, match=message):
        admin.seed_lab(lab_state, {"hosts": {EXCHANGE: spec}})
    assert LabStore(lab_state).read() == before


# --- Test-CsExStorageConnectivity, against a running lab server ---------------------------------


class Lab:
    """The lab state file, its server's URL and a way to run commands on a host as an admin would."""

    def __init__(self, path: Path, url: str) -> None:
        self.path = path
        self.url = url

    def invoke(self, host: str, *commands: Command) -> list[CommandResult]:
        transport = LabTransport(self.path, host)
        try:
            return transport.invoke(commands)
        finally:
            transport.close()

    def ok(self, host: str, cmdlet: str, **params: Any) -> tuple[Any, ...]:
        (result,) = self.invoke(host, Command(cmdlet, params))
        assert result.ok, result.error
        return result.output

    def storage_test(self, sip_uri: str = KEN, host: str = POOL, **params: Any) -> CommandResult:
        (result,) = self.invoke(host, Command("Test-CsExStorageConnectivity", {"SipUri": sip_uri, **params}))
        return result

    def broken(self, reason: str, sip_uri: str = KEN, host: str = POOL) -> bool:
        result = self.storage_test(sip_uri, host)
        assert not result.ok, result
        assert result.error == UNAUTHORIZED + reason, result.error
        return True

    def snapshot(self) -> dict[str, Any]:
        return LabStore(self.path).read()

    def thumbprint(self, service: str) -> str:
        return thumbprint_of(self.snapshot(), service)


def establish(lab: Lab) -> None:
    """Both directions of the trust, made with the cmdlets as seed 002 says (Configure-EnterprisePartnerApplication.ps1
    modelled as the linked user, its role assignments and the partner application it creates)."""
    lab.ok(POOL, "Remove-CsPartnerApplication", Identity="microsoft.exchange")  # wrong ApplicationIdentifier
    lab.ok(POOL, "New-CsPartnerApplication", Identity="microsoft.exchange", ApplicationTrustLevel="Full",
           MetadataUrl=lab.url + estate.EXCHANGE_PATH)
    lab.ok(POOL, "Set-CsOAuthConfiguration", ServiceName=estate.SKYPE_ID)
    lab.ok(EXCHANGE, "New-LinkedUser", Name=ACCOUNT, UserPrincipalName=UPN)
    for role in ("UserApplication", "ArchiveApplication", "LegalHoldApplication"):
        lab.ok(EXCHANGE, "New-ManagementRoleAssignment", Role=role, User=ACCOUNT)
    lab.ok(EXCHANGE, "New-PartnerApplication", Name=ACCOUNT, AuthMetadataUrl=lab.url + estate.SKYPE_PATH,
           LinkedAccount=ACCOUNT)
    for result in lab.invoke(EXCHANGE, *(iisreset(server) for server in estate.EXCHANGE_SERVERS)):
        assert result.ok, result.error


@pytest.fixture
def lab(lab_state: Path, lab_server: LabServer) -> Lab:
    return Lab(lab_state, lab_server.base_url)


@pytest.fixture
def trusted(lab: Lab) -> Iterator[Lab]:
    establish(lab)
    assert lab.storage_test().ok
    yield lab


def test_storage_connectivity_succeeds_when_both_sides_trust_each_other(lab: Lab) -> None:
    establish(lab)
    (output,) = lab.ok(POOL, "Test-CsExStorageConnectivity", SipUri=KEN)
    assert set(output) == {"SipUri", "Folder", "Result", "Latency"}
    assert (output["SipUri"], output["Folder"], output["Result"]) == (KEN, "Conversation History", "Success")
    assert isinstance(output["Latency"], int) and output["Latency"] >= 0
    (other,) = lab.ok(POOL, "test-csexstorageconnectivity", SipUri="SIP:Pilar@litwareinc.com", Folder="Inbox",
                      DeleteItem=True)
    assert (other["Folder"], other["Result"]) == ("Inbox", "Success")
    assert lab.snapshot()["hosts"][EXCHANGE]["iisResets"] == {"atl-exchange-001": 1, "atl-exchange-002": 1}


def test_storage_connectivity_parameters(lab: Lab) -> None:
    (result,) = lab.invoke(POOL, Command("Test-CsExStorageConnectivity", {}))
    assert result.error == ("Test-CsExStorageConnectivity : Cannot process command because of one or more missing "
                            "mandatory parameters: SipUri.")
    (result,) = lab.invoke(POOL, Command("Test-CsExStorageConnectivity", {"SipUri": KEN, "Mailbox": "x"}))
    assert result.error == ("Test-CsExStorageConnectivity : A parameter cannot be found that matches parameter name "
                            "'Mailbox'.")


def test_default_estate_fails_the_storage_test(lab: Lab) -> None:
    assert lab.broken("Skype for Business does not trust Exchange: no partner application on atl-cs-001 has "
                      f"ApplicationIdentifier '{estate.EXCHANGE_ID}' (the AuthConfig.ServiceName of Exchange "
                      "atl-exchange-001)")


def test_no_exchange_linked(trusted: Lab) -> None:
    assert trusted.broken("no Exchange server is linked to this pool", host="fab-cs-001")
    admin.seed_lab(trusted.path, {"hosts": {POOL: {"exchange": "fab-cs-001"}}})  # not an Exchange host
    assert trusted.broken("no Exchange server is linked to this pool (its link names fab-cs-001, which is not an "
                          "Exchange host of the lab)")
    admin.seed_lab(trusted.path, {"hosts": {POOL: {"exchange": None}}})
    assert trusted.broken("no Exchange server is linked to this pool")


def test_storage_handler_outside_a_lab_run(state: dict[str, Any]) -> None:
    handler = platform("skype").cmdlets["Test-CsExStorageConnectivity"]
    context = CmdletContext(fetch=lambda url: pytest.fail("no download expected"))
    with pytest.raises(CmdletError, match="no Exchange server is linked to this pool"):
        handler("Test-CsExStorageConnectivity", {"SipUri": KEN}, state["hosts"][POOL]["objects"], context)


def test_skype_side_missing(trusted: Lab) -> None:
    trusted.ok(POOL, "Remove-CsPartnerApplication", Identity="microsoft.exchange")
    assert trusted.broken("Skype for Business does not trust Exchange: no partner application on atl-cs-001 has "
                          f"ApplicationIdentifier '{estate.EXCHANGE_ID}' (the AuthConfig.ServiceName of Exchange "
                          "atl-exchange-001)")


def test_skype_side_disabled(trusted: Lab) -> None:
    trusted.ok(POOL, "Set-CsPartnerApplication", Identity="microsoft.exchange", Enabled=False)
    assert trusted.broken("Skype for Business does not trust Exchange: partner application microsoft.exchange on "
                          "atl-cs-001 is disabled")


def test_exchange_service_name_changed(trusted: Lab) -> None:
    trusted.ok(EXCHANGE, "Set-AuthConfig", ServiceName="00000009-0000-0ff1-ce00-000000000000")
    assert trusted.broken("Skype for Business does not trust Exchange: no partner application on atl-cs-001 has "
                          "ApplicationIdentifier '00000009-0000-0ff1-ce00-000000000000' (the AuthConfig.ServiceName "
                          "of Exchange atl-exchange-001)")


def test_rotated_exchange_certificate_not_yet_published(trusted: Lab) -> None:
    published = trusted.thumbprint("exchange")
    trusted.ok(EXCHANGE, "Set-AuthConfig", CertificateThumbprint=NEW_THUMBPRINT)
    assert trusted.broken(f"Skype for Business does not trust Exchange: the metadata document at {trusted.url}"
                          f"{estate.EXCHANGE_PATH} publishes certificate {published} but Exchange atl-exchange-001 "
                          f"signs with {NEW_THUMBPRINT} (a rotated certificate not yet published?)")


def test_staged_certificate_breaks_the_trust_when_its_date_passes(trusted: Lab) -> None:
    published = trusted.thumbprint("exchange")
    trusted.ok(EXCHANGE, "Set-AuthConfig", NewCertificateThumbprint=NEW_THUMBPRINT,
               NewCertificateEffectiveDate="2099-01-01")
    assert trusted.storage_test().ok  # staged only: Exchange still signs with the published one
    admin.set_object(trusted.path, EXCHANGE, "AuthConfig", "Global",
                     {"NextCertificateEffectiveDate": "2000-01-01T00:00:00+00:00"})  # the date has come
    assert trusted.broken(f"Skype for Business does not trust Exchange: the metadata document at {trusted.url}"
                          f"{estate.EXCHANGE_PATH} publishes certificate {published} but Exchange atl-exchange-001 "
                          f"signs with {NEW_THUMBPRINT} (a rotated certificate not yet published?)")
    assert trusted.snapshot()["hosts"][EXCHANGE]["objects"]["AuthConfig"]["CurrentCertificateThumbprint"] == (
        NEW_THUMBPRINT)


def test_exchange_without_a_signing_certificate(trusted: Lab) -> None:
    admin.set_object(trusted.path, EXCHANGE, "AuthConfig", "Auth Configuration", {"CurrentCertificateThumbprint": None})
    assert trusted.broken("Skype for Business does not trust Exchange: Exchange atl-exchange-001 has no signing "
                          "certificate (its AuthConfig.CurrentCertificateThumbprint is empty)")


def test_exchange_realm_mismatch(trusted: Lab) -> None:
    trusted.ok(EXCHANGE, "Set-AuthConfig", Realm="contoso.com")
    assert trusted.broken(f"Skype for Business does not trust Exchange: the metadata document at {trusted.url}"
                          f"{estate.EXCHANGE_PATH} publishes realm litwareinc.com but Exchange atl-exchange-001's "
                          "realm is contoso.com (AuthConfig.Realm)")


def test_skype_realm_mismatch(trusted: Lab) -> None:
    trusted.ok(POOL, "Set-CsOAuthConfiguration", Realm="fabrikam.com")
    # Exchange's AuthConfig.Realm is empty, so Exchange's realm is the pool's organization realm first.
    assert trusted.broken(f"Skype for Business does not trust Exchange: the metadata document at {trusted.url}"
                          f"{estate.EXCHANGE_PATH} publishes realm litwareinc.com but Exchange atl-exchange-001's "
                          "realm is fabrikam.com (AuthConfig.Realm is empty: the organization's)")
    trusted.ok(EXCHANGE, "Set-AuthConfig", Realm="litwareinc.com")
    assert trusted.broken(f"Exchange does not trust Skype for Business: the metadata document at {trusted.url}"
                          f"{estate.SKYPE_PATH} publishes realm litwareinc.com but atl-cs-001's "
                          "OAuthConfiguration.Realm is fabrikam.com")


def test_exchange_document_unreachable(trusted: Lab) -> None:
    admin.set_document_status(trusted.path, estate.EXCHANGE_PATH, "notfound")
    result = trusted.storage_test()
    assert not result.ok
    assert (result.error or "").startswith(
        UNAUTHORIZED + f"Skype for Business does not trust Exchange: the metadata document at {trusted.url}"
        f"{estate.EXCHANGE_PATH} cannot be downloaded (")


def test_skype_trusts_exchange_by_certificate(trusted: Lab) -> None:
    certificate = trusted.snapshot()["services"]["exchange"]["certificate"]
    trusted.ok(POOL, "Remove-CsPartnerApplication", Identity="microsoft.exchange")
    trusted.ok(POOL, "New-CsPartnerApplication", Identity="microsoft.exchange",
               ApplicationIdentifier=estate.EXCHANGE_ID, ApplicationTrustLevel="Full", CertificateRawData=certificate,
               Realm="litwareinc.com")
    assert trusted.storage_test().ok
    trusted.ok(EXCHANGE, "Set-AuthConfig", CertificateThumbprint=OTHER_THUMBPRINT)
    assert trusted.broken("Skype for Business does not trust Exchange: partner application microsoft.exchange on "
                          f"atl-cs-001 carries certificate {trusted.thumbprint('exchange')} but Exchange "
                          f"atl-exchange-001 signs with {OTHER_THUMBPRINT}")


def test_skype_trusts_exchange_only_through_an_oauth_server(trusted: Lab) -> None:
    trusted.ok(POOL, "Remove-CsPartnerApplication", Identity="microsoft.exchange")
    trusted.ok(POOL, "New-CsPartnerApplication", Identity="microsoft.exchange",
               ApplicationIdentifier=estate.EXCHANGE_ID, ApplicationTrustLevel="Full", UseOAuthServer=True)
    assert trusted.broken("Skype for Business does not trust Exchange: partner application microsoft.exchange on "
                          "atl-cs-001 has neither a MetadataUrl nor a certificate (UseOAuthServer), so nothing "
                          "verifies the tokens Exchange atl-exchange-001 signs")


def test_exchange_side_missing(trusted: Lab) -> None:
    trusted.ok(EXCHANGE, "Remove-PartnerApplication", Identity=ACCOUNT)
    # Exchange's own SfBLegacy has Skype's identifier too (disabled in the lab's estate)
    assert trusted.broken("Exchange does not trust Skype for Business: partner application SfBLegacy on "
                          "atl-exchange-001 is disabled")
    trusted.ok(EXCHANGE, "Remove-PartnerApplication", Identity="SfBLegacy")
    assert trusted.broken("Exchange does not trust Skype for Business: no partner application on atl-exchange-001 "
                          f"has ApplicationIdentifier '{estate.SKYPE_ID}' (the OAuthConfiguration.ServiceName of "
                          "atl-cs-001)")


def test_skype_service_name_not_set(trusted: Lab) -> None:
    trusted.ok(POOL, "Set-CsOAuthConfiguration", ServiceName=None)
    assert trusted.broken("Exchange does not trust Skype for Business: no partner application on atl-exchange-001 "
                          "has ApplicationIdentifier '' (the OAuthConfiguration.ServiceName of atl-cs-001)")


def test_exchange_side_disabled(trusted: Lab) -> None:
    trusted.ok(EXCHANGE, "Set-PartnerApplication", Identity=ACCOUNT, Enabled=False)
    # the lab's storage test names the first application with Skype's identifier: Exchange's own SfBLegacy
    assert trusted.broken("Exchange does not trust Skype for Business: partner application SfBLegacy on "
                          "atl-exchange-001 is disabled")


def test_exchange_side_without_linked_account(trusted: Lab) -> None:
    trusted.ok(EXCHANGE, "Set-PartnerApplication", Identity=ACCOUNT, LinkedAccount=None)
    assert trusted.broken(f"Exchange does not trust Skype for Business: partner application {ACCOUNT} on "
                          "atl-exchange-001 has no LinkedAccount")


def test_exchange_side_linked_account_removed(trusted: Lab) -> None:
    trusted.ok(EXCHANGE, "Remove-LinkedUser", Identity=ACCOUNT)
    assert trusted.broken(f"Exchange does not trust Skype for Business: partner application {ACCOUNT} on "
                          f"atl-exchange-001 has LinkedAccount {ACCOUNT}, which is not a linked user on "
                          "atl-exchange-001")


@pytest.mark.parametrize("role", ["UserApplication", "ArchiveApplication"])
def test_exchange_side_missing_role(trusted: Lab, role: str) -> None:
    trusted.ok(EXCHANGE, "Remove-ManagementRoleAssignment", Identity=f"{role}-{ACCOUNT}")
    assert trusted.broken(f"Exchange does not trust Skype for Business: linked account {ACCOUNT} of partner "
                          f"application {ACCOUNT} on atl-exchange-001 lacks the {role} role (no "
                          "ManagementRoleAssignment gives it)")


def test_other_roles_are_not_needed(trusted: Lab) -> None:
    trusted.ok(EXCHANGE, "Remove-ManagementRoleAssignment", Identity=f"LegalHoldApplication-{ACCOUNT}")
    assert trusted.storage_test().ok


def test_exchange_side_without_metadata(trusted: Lab) -> None:
    trusted.ok(EXCHANGE, "Remove-PartnerApplication", Identity=ACCOUNT)
    trusted.ok(EXCHANGE, "New-PartnerApplication", Name=ACCOUNT, ApplicationIdentifier=estate.SKYPE_ID,
               Realm="litwareinc.com", LinkedAccount=ACCOUNT)
    assert trusted.broken(f"Exchange does not trust Skype for Business: partner application {ACCOUNT} on "
                          "atl-exchange-001 has no AuthMetadataUrl, so Exchange has no certificate to verify the "
                          "tokens atl-cs-001 signs")


def test_exchange_side_has_an_old_pool_certificate(trusted: Lab) -> None:
    old_path = "/atl-cs-001-old.litwareinc.com/metadata/json/1"
    admin.seed_lab(trusted.path, {
        "services": {"skype-old": {"serviceName": estate.SKYPE_ID, "realm": "litwareinc.com",
                                   "host": "atl-cs-001.litwareinc.com", "certificate": "generate"}},
        "documents": {old_path: {"service": "skype-old"}},
    })
    trusted.ok(EXCHANGE, "Set-PartnerApplication", Identity=ACCOUNT, AuthMetadataUrl=trusted.url + old_path)
    assert trusted.broken(f"Exchange does not trust Skype for Business: the metadata document at {trusted.url}"
                          f"{old_path} publishes certificate {trusted.thumbprint('skype-old')} but atl-cs-001 signs "
                          f"with {trusted.thumbprint('skype')}")


def test_pool_without_a_service_of_its_own(trusted: Lab) -> None:
    with LabStore(trusted.path).edit() as state:
        del state["hosts"][POOL]["service"]
    assert trusted.broken("Exchange does not trust Skype for Business: the lab does not know which certificate "
                          "atl-cs-001 signs with (its host record names no service)")


def test_skype_service_name_not_the_well_known_one(lab: Lab) -> None:
    other = "00000099-0000-0ff1-ce00-000000000000"
    with LabStore(lab.path).edit() as state:
        state["services"]["skype"]["serviceName"] = other  # the pool's document publishes it too
    establish(lab)
    lab.ok(POOL, "Set-CsOAuthConfiguration", ServiceName=other)
    assert lab.broken(f"atl-cs-001's OAuthConfiguration.ServiceName is '{other}' but Skype for Business Server's "
                      f"must be {estate.SKYPE_ID}")


def test_unknown_mailbox(trusted: Lab) -> None:
    result = trusted.storage_test("sip:nobody@litwareinc.com")
    assert result.error == ("Test-CsExStorageConnectivity : sip:nobody@litwareinc.com: mailbox not found on "
                            "Exchange atl-exchange-001.")
    assert trusted.storage_test("kenmyer@litwareinc.com").error == (
        "Test-CsExStorageConnectivity : kenmyer@litwareinc.com: mailbox not found on Exchange atl-exchange-001.")

# --- SettingOverride ------------------------------------------------------------------------------------------


def test_setting_override_new_get_set_remove_as_documented(run: Runner, state: dict[str, Any]) -> None:
    assert state["hosts"][EXCHANGE]["objects"]["SettingOverride"] == []  # the default estate has none
    name = "EnableExchangeHybrid3PAppFeature"
    missing = run("New-SettingOverride", Name=name, Component="Global", Section="ExchangeOnpremAsThirdPartyAppId",
                  Parameters=["Enabled=true"])
    assert not missing.ok and "Reason" in str(missing.error)  # -Reason is mandatory on New
    ok(run("New-SettingOverride", Name=name, Component="Global", Section="ExchangeOnpremAsThirdPartyAppId",
           Parameters="Enabled=true", Reason="hybrid"))
    assert not run("New-SettingOverride", Name=name, Component="Global", Section="S", Parameters="A=1",
                   Reason="again").ok  # the name is taken
    (read,) = ok(run("Get-SettingOverride", Identity=name))
    assert (read["ComponentName"], read["SectionName"], read["Parameters"], read["Reason"], read["Server"]) == (
        "Global", "ExchangeOnpremAsThirdPartyAppId", ["Enabled=true"], "hybrid", None)
    assert fails(run("Set-SettingOverride", Identity=name, Component="Other"), "Set-SettingOverride",
                 "A parameter cannot be found that matches parameter name 'Component'.")
    ok(run("Set-SettingOverride", Identity=name, Parameters=["Enabled=false"], Server=["EX01"]))
    (read,) = ok(run("Get-SettingOverride"))
    assert read["Parameters"] == ["Enabled=false"] and read["Server"] == ["EX01"]
    ok(run("Remove-SettingOverride", Identity=name))
    assert ok(run("Get-SettingOverride")) == ()
