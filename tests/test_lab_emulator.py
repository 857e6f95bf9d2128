"""The Skype cmdlet emulation and the lab transport: behaviour and errors as documented."""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from reconciler.errors import METADATA_ERROR, MetadataError, TransportError
from reconciler.lab import certs, estate
from reconciler.lab.admin import add_failure
from reconciler.lab.emulator import CmdletContext, execute_batch, run_command
from reconciler.lab.state import LabStore
from reconciler.lab.transport import LabTransport
from reconciler.metadata import MetadataDocument, SigningKey
from reconciler.model import TargetSpec
from reconciler.providers.base import TransportFactory
from reconciler.transports.base import Command, CommandResult, Transport

LITWARE = "atl-cs-001"
FABRIKAM = "fab-cs-001"
EXCHANGE_URL = "http://lab/atl-exchange-001.litwareinc.com/autodiscover/metadata/json/1"
SHAREPOINT_URL = "http://lab/atl-sharepoint-001.litwareinc.com/jsonmetadata.ashx"
STS_URL = f"http://lab/accounts.accesscontrol.windows.net/{estate.LAB_TENANT_ID}/metadata/json/1"
BAD_URL = "http://lab/nothing-here"
METADATA_BIND_ERROR = (
    "Cannot bind parameter 'MetadataUrl' to the target. Exception setting \"MetadataUrl\": "
    f'"{METADATA_ERROR}"'
)
AMBIGUOUS = "Parameter set cannot be resolved using the specified named parameters."


@pytest.fixture(scope="module")
def cert_der() -> bytes:
    return certs.make_certificate("partner.litwareinc.com")


def _document(url: str, service_name: str | None, realm: str | None, der: bytes) -> MetadataDocument:
    return MetadataDocument(url=url, service_name=service_name, realm=realm, issuer=None, name=None,
                            keys=(SigningKey(x5t=None, certificate_der=der),))


@pytest.fixture
def documents(cert_der: bytes) -> dict[str, MetadataDocument]:
    return {
        EXCHANGE_URL: _document(EXCHANGE_URL, estate.EXCHANGE_ID, "litwareinc.com", cert_der),
        SHAREPOINT_URL: _document(SHAREPOINT_URL, estate.SHAREPOINT_ID, "litwareinc.com", cert_der),
        STS_URL: _document(STS_URL, estate.ACS_ID, estate.LAB_TENANT_ID, cert_der),
        "http://lab/no-service": _document("http://lab/no-service", None, None, cert_der),
    }


@pytest.fixture
def fetched() -> list[str]:
    return []


@pytest.fixture
def context(documents: dict[str, MetadataDocument], fetched: list[str]) -> CmdletContext:
    def fetch(url: str) -> MetadataDocument:
        fetched.append(url)
        if url not in documents:
            raise MetadataError(url, "HTTP 404")
        return documents[url]

    return CmdletContext(fetch=fetch)


@pytest.fixture
def state(lab_default_estate: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(lab_default_estate)


Runner = Callable[..., CommandResult]


@pytest.fixture
def run(state: dict[str, Any], context: CmdletContext) -> Runner:
    def runner(cmdlet: str, host: str = LITWARE, **parameters: Any) -> CommandResult:
        return run_command(state, host, Command(cmdlet, parameters), context)

    return runner


def objects(state: Mapping[str, Any], host: str, kind: str) -> Any:
    return state["hosts"][host]["objects"][kind]


def app(state: Mapping[str, Any], identity: str, host: str = LITWARE) -> dict[str, Any] | None:
    found = [a for a in objects(state, host, "PartnerApplication") if a["Identity"] == identity]
    return found[0] if found else None


def fails(result: CommandResult, cmdlet: str, message: str) -> bool:
    assert not result.ok, result
    assert result.error == f"{cmdlet} : {message}", result.error
    return True


# --- dispatch and binding -----------------------------------------------------------------------


def test_unknown_cmdlet(run: Runner) -> None:
    result = run("New-CsOAuthConfiguration", Identity="Global")
    assert fails(result, "New-CsOAuthConfiguration",
                 "The term 'New-CsOAuthConfiguration' is not recognized as the name of a cmdlet, function, "
                 "script file, or operable program.")


@pytest.mark.parametrize(
    "cmdlet",
    ["Get-CsOAuthConfiguration", "Set-CsOAuthConfiguration", "Get-CsOAuthServer", "New-CsOAuthServer",
     "Set-CsOAuthServer", "Remove-CsOAuthServer", "Get-CsPartnerApplication", "New-CsPartnerApplication",
     "Set-CsPartnerApplication", "Remove-CsPartnerApplication"],
)
def test_unknown_parameter_on_every_cmdlet(run: Runner, cmdlet: str) -> None:
    assert fails(run(cmdlet, Identity="x", Bogus=1), cmdlet,
                 "A parameter cannot be found that matches parameter name 'Bogus'.")


def test_names_are_case_insensitive_and_common_parameters_accepted(run: Runner, state: dict[str, Any]) -> None:
    result = run_command(
        state, LITWARE,
        Command("set-csPARTNERapplication", {"-identity": "MICROSOFT.EXCHANGE", "applicationtrustlevel": "full",
                                             "ErrorAction": "Stop", "Confirm": False}),
        CmdletContext(fetch=lambda url: pytest.fail("no download expected")),
    )
    assert result.ok, result.error
    assert app(state, "microsoft.exchange")["ApplicationTrustLevel"] == "Full"  # type: ignore[index]


def test_parameter_given_twice(run: Runner) -> None:
    assert fails(run("Get-CsOAuthServer", Identity="a", identity="b"), "Get-CsOAuthServer",
                 "Cannot bind parameter because parameter 'Identity' is specified more than once.")


def test_output_is_a_copy(run: Runner, state: dict[str, Any]) -> None:
    result = run("Get-CsPartnerApplication", Identity="app")
    output = result.output[0]
    assert isinstance(output, dict)
    output["Enabled"] = False
    assert app(state, "app")["Enabled"] is True  # type: ignore[index]


# --- CsOAuthConfiguration -----------------------------------------------------------------------


def test_get_oauth_configuration(run: Runner) -> None:
    result = run("Get-CsOAuthConfiguration")
    assert result.ok
    assert result.output == ({
        "Identity": "Global", "ServiceName": "", "Realm": "litwareinc.com",
        "ClientAuthorizationOAuthServerIdentity": "", "ExchangeAutodiscoverUrl": "",
        "ExchangeAutodiscoverAllowedDomains": "",
    },)
    assert run("Get-CsOAuthConfiguration", Identity="global").ok
    assert fails(run("Get-CsOAuthConfiguration", Identity="site:Redmond"), "Get-CsOAuthConfiguration",
                 'Cannot find "OAuthConfiguration" "site:Redmond" because it does not exist.')


def test_set_oauth_configuration(run: Runner, state: dict[str, Any]) -> None:
    result = run("Set-CsOAuthConfiguration", Identity="Global", ServiceName=estate.SKYPE_ID,
                 Realm=estate.LAB_TENANT_ID, ClientAuthorizationOAuthServerIdentity="microsoft.sts",
                 ExchangeAutodiscoverUrl="https://autodiscover-s.outlook.com/autodiscover/autodiscover.svc",
                 ExchangeAutodiscoverAllowedDomains="*.outlook.com")
    assert result.ok and result.output == ()
    config = objects(state, LITWARE, "OAuthConfiguration")
    assert config["ServiceName"] == estate.SKYPE_ID
    assert config["Realm"] == estate.LAB_TENANT_ID
    assert config["ClientAuthorizationOAuthServerIdentity"] == "microsoft.sts"
    assert config["ExchangeAutodiscoverAllowedDomains"] == "*.outlook.com"
    assert run("Set-CsOAuthConfiguration", ExchangeAutodiscoverUrl=None).ok
    assert config["ExchangeAutodiscoverUrl"] == ""
    assert config["ServiceName"] == estate.SKYPE_ID  # untouched


def test_set_oauth_configuration_rejects_collections(run: Runner, state: dict[str, Any]) -> None:
    result = run("Set-CsOAuthConfiguration", Realm=["a", "b"])
    assert not result.ok and "Realm" in (result.error or "")
    assert objects(state, LITWARE, "OAuthConfiguration")["Realm"] == "litwareinc.com"


# --- CsOAuthServer ------------------------------------------------------------------------------


def test_get_oauth_server(run: Runner) -> None:
    assert run("Get-CsOAuthServer").output == ()
    result = run("Get-CsOAuthServer", host=FABRIKAM)
    assert [s["Identity"] for s in result.output] == ["microsoft.sts"]
    # The properties Get-CsOAuthServer returns (onpremdiag/SfBServer,
    # tests/mode/sfbserver/rules/Exchange/RDTestOAuthServerConfiguration.tests.ps1).
    assert set(result.output[0]) == {"Identity", "Name", "IssuerIdentifier", "MetadataUrl", "Realm", "Type",
                                     "AcceptSecurityIdentifierInformation", "AuthorizationUriOverride"}
    assert result.output[0]["MetadataUrl"] == estate.OLD_TENANT_STS_URL
    assert fails(run("Get-CsOAuthServer", Identity="nope"), "Get-CsOAuthServer",
                 'Cannot find "OAuthServer" "nope" because it does not exist.')


def test_new_oauth_server(run: Runner, state: dict[str, Any], fetched: list[str]) -> None:
    result = run("New-CsOAuthServer", Identity="microsoft.sts", MetadataUrl=STS_URL,
                 AcceptSecurityIdentifierInformation=True, Type="AzureAd")
    assert result.ok, result.error
    assert fetched == [STS_URL]
    (server,) = objects(state, LITWARE, "OAuthServer")
    assert (server["Identity"], server["MetadataUrl"], server["Type"], server["AcceptSecurityIdentifierInformation"]) \
        == ("microsoft.sts", STS_URL, "AzureAd", True)
    # Realm and IssuerIdentifier come from ACS's document when not given.
    assert server["IssuerIdentifier"] == "00000001-0000-0000-c000-000000000000"
    assert run("New-CsOAuthServer", Identity="acs", MetadataUrl=STS_URL).ok
    assert run("Get-CsOAuthServer", Identity="acs").output[0]["Type"] == "Acs"
    assert result.output[0]["Identity"] == "microsoft.sts"
    assert run("New-CsOAuthServer", Identity="other", MetadataUrl=STS_URL, Realm="contoso.com").ok
    assert objects(state, LITWARE, "OAuthServer")[2]["Realm"] == "contoso.com"


def test_new_oauth_server_errors(run: Runner, state: dict[str, Any]) -> None:
    assert fails(run("New-CsOAuthServer", Identity="microsoft.sts", MetadataUrl=BAD_URL), "New-CsOAuthServer",
                 METADATA_BIND_ERROR)
    assert fails(run("New-CsOAuthServer", Identity="MICROSOFT.STS", MetadataUrl=STS_URL, host=FABRIKAM),
                 "New-CsOAuthServer", '"OAuthServer" with identity "MICROSOFT.STS" already exists.')
    assert fails(run("New-CsOAuthServer", Identity="x"), "New-CsOAuthServer",
                 "Cannot process command because of one or more missing mandatory parameters: MetadataUrl.")
    assert fails(run("New-CsOAuthServer", MetadataUrl=STS_URL), "New-CsOAuthServer",
                 "Cannot process command because of one or more missing mandatory parameters: Identity.")
    assert fails(run("New-CsOAuthServer", Identity="x", MetadataUrl=""), "New-CsOAuthServer",
                 "Cannot bind argument to parameter 'MetadataUrl' because it is an empty string.")
    assert objects(state, LITWARE, "OAuthServer") == []
    assert len(objects(state, FABRIKAM, "OAuthServer")) == 1


def test_set_oauth_server(run: Runner, state: dict[str, Any], fetched: list[str]) -> None:
    assert run("Set-CsOAuthServer", Identity="microsoft.sts", MetadataUrl=STS_URL, Type="ACS",
               AuthorizationUriOverride="https://login.windows.net/", host=FABRIKAM).ok
    server = objects(state, FABRIKAM, "OAuthServer")[0]
    assert fetched == [STS_URL]
    assert (server["MetadataUrl"], server["Type"], server["AuthorizationUriOverride"]) == (
        STS_URL, "ACS", "https://login.windows.net/")


def test_set_oauth_server_errors(run: Runner, state: dict[str, Any]) -> None:
    before = copy.deepcopy(objects(state, FABRIKAM, "OAuthServer"))
    assert fails(run("Set-CsOAuthServer", Identity="microsoft.sts", Realm="x", host=FABRIKAM), "Set-CsOAuthServer",
                 "A parameter cannot be found that matches parameter name 'Realm'.")
    assert fails(run("Set-CsOAuthServer", Identity="microsoft.sts", MetadataUrl=BAD_URL, Type="AzureAd",
                     host=FABRIKAM), "Set-CsOAuthServer", METADATA_BIND_ERROR)
    assert fails(run("Set-CsOAuthServer", Identity="nope", Type="ACS", host=FABRIKAM), "Set-CsOAuthServer",
                 'Cannot find "OAuthServer" "nope" because it does not exist.')
    assert fails(run("Set-CsOAuthServer", Identity="microsoft.sts", AcceptSecurityIdentifierInformation="yes",
                     host=FABRIKAM), "Set-CsOAuthServer",
                 "Cannot process argument transformation on parameter 'AcceptSecurityIdentifierInformation'. "
                 'Cannot convert value "System.String" to type "System.Boolean". Boolean parameters accept only '
                 "Boolean values and numbers, such as $True, $False, 1 or 0.")
    assert objects(state, FABRIKAM, "OAuthServer") == before


def test_remove_oauth_server(run: Runner, state: dict[str, Any]) -> None:
    assert run("Remove-CsOAuthServer", Identity="Microsoft.STS", host=FABRIKAM).ok
    assert objects(state, FABRIKAM, "OAuthServer") == []
    assert fails(run("Remove-CsOAuthServer", Identity="microsoft.sts", host=FABRIKAM), "Remove-CsOAuthServer",
                 'Cannot find "OAuthServer" "microsoft.sts" because it does not exist.')


# --- CsPartnerApplication: Get / Remove ---------------------------------------------------------


def test_get_partner_application(run: Runner, state: dict[str, Any]) -> None:
    result = run("Get-CsPartnerApplication")
    assert [a["Identity"] for a in result.output] == ["app", "microsoft.exchange"]
    exchange = run("Get-CsPartnerApplication", Identity="Microsoft.Exchange").output
    assert len(exchange) == 1
    # The properties Get-CsPartnerApplication returns: the form is in AuthToken (onpremdiag/SfBServer,
    # tests/mode/sfbserver/rules/Exchange/RDCsPartnerApplication.tests.ps1).
    assert set(exchange[0]) == {"Identity", "AuthToken", "Name", "ApplicationIdentifier", "Realm",
                                "ApplicationTrustLevel", "AcceptSecurityIdentifierInformation", "Enabled"}
    assert exchange[0]["ApplicationIdentifier"] == estate.WRONG_EXCHANGE_ID
    assert exchange[0]["AuthToken"] == "Value=" + state["services"]["exchange"]["certificate"]
    assert fails(run("Get-CsPartnerApplication", Identity="microsoft.sharepoint"), "Get-CsPartnerApplication",
                 'Cannot find "PartnerApplication" "microsoft.sharepoint" because it does not exist.')


def test_remove_partner_application(run: Runner, state: dict[str, Any]) -> None:
    assert run("Remove-CsPartnerApplication", Identity="APP").ok
    assert app(state, "app") is None
    assert fails(run("Remove-CsPartnerApplication", Identity="app"), "Remove-CsPartnerApplication",
                 'Cannot find "PartnerApplication" "app" because it does not exist.')
    assert fails(run("Remove-CsPartnerApplication"), "Remove-CsPartnerApplication",
                 "Cannot process command because of one or more missing mandatory parameters: Identity.")


# --- New-CsPartnerApplication -------------------------------------------------------------------


def test_new_from_metadata(run: Runner, state: dict[str, Any], fetched: list[str]) -> None:
    result = run("New-CsPartnerApplication", Identity="microsoft.sharepoint", MetadataUrl=SHAREPOINT_URL,
                 ApplicationTrustLevel="full")
    assert result.ok, result.error
    assert fetched == [SHAREPOINT_URL]
    assert app(state, "microsoft.sharepoint") == {
        "Identity": "microsoft.sharepoint", "ApplicationIdentifier": estate.SHAREPOINT_ID,
        "Realm": "litwareinc.com", "ApplicationTrustLevel": "Full", "AcceptSecurityIdentifierInformation": False,
        "Enabled": True, "MetadataUrl": SHAREPOINT_URL, "UseOAuthServer": False, "CertificateRawData": None,
    }
    assert result.output[0]["AuthToken"] == f"Value={SHAREPOINT_URL}"
    assert result.output[0]["Name"] == "microsoft.sharepoint"


def test_new_from_metadata_download_failure(run: Runner, state: dict[str, Any]) -> None:
    result = run("New-CsPartnerApplication", Identity="microsoft.sharepoint", MetadataUrl=BAD_URL,
                 ApplicationTrustLevel="Full")
    assert fails(result, "New-CsPartnerApplication", METADATA_BIND_ERROR)
    assert app(state, "microsoft.sharepoint") is None


def test_new_from_metadata_without_service_name(run: Runner) -> None:
    result = run("New-CsPartnerApplication", Identity="x", MetadataUrl="http://lab/no-service",
                 ApplicationTrustLevel="Full")
    assert fails(result, "New-CsPartnerApplication", METADATA_BIND_ERROR)


def test_new_with_oauth_server(run: Runner, state: dict[str, Any], fetched: list[str]) -> None:
    assert run("New-CsPartnerApplication", Identity="microsoft.sharepoint", ApplicationIdentifier=estate.SHAREPOINT_ID,
               ApplicationTrustLevel="Application", UseOAuthServer=True, Enabled=False,
               AcceptSecurityIdentifierInformation=True).ok
    created = app(state, "microsoft.sharepoint")
    assert created is not None
    assert (created["UseOAuthServer"], created["Realm"], created["MetadataUrl"], created["CertificateRawData"]) == (
        True, None, None, None)
    assert (created["Enabled"], created["AcceptSecurityIdentifierInformation"]) == (False, True)
    assert created["ApplicationTrustLevel"] == "Application"
    assert run("New-CsPartnerApplication", Identity="other", ApplicationIdentifier="x", ApplicationTrustLevel="User",
               UseOAuthServer=True, Realm="contoso.com").ok
    assert app(state, "other")["Realm"] == "contoso.com"  # type: ignore[index]
    assert fetched == []


def test_new_with_certificate_raw_data(run: Runner, state: dict[str, Any], cert_der: bytes) -> None:
    raw = base64.b64encode(cert_der).decode()
    wrapped = "\n".join(raw[i:i + 64] for i in range(0, len(raw), 64))
    assert run("New-CsPartnerApplication", Identity="partner", ApplicationIdentifier="p-1",
               ApplicationTrustLevel="Full", CertificateRawData=wrapped, Realm="litwareinc.com").ok
    created = app(state, "partner")
    assert created is not None
    assert created["CertificateRawData"] == raw
    assert (created["UseOAuthServer"], created["MetadataUrl"], created["Realm"]) == (False, None, "litwareinc.com")


@pytest.mark.parametrize("value", ["bm90IGEgY2VydA==", "%%%", 42])
def test_new_with_bad_certificate_raw_data(run: Runner, state: dict[str, Any], value: Any) -> None:
    result = run("New-CsPartnerApplication", Identity="partner", ApplicationIdentifier="p-1",
                 ApplicationTrustLevel="Full", CertificateRawData=value, Realm="litwareinc.com")
    assert fails(result, "New-CsPartnerApplication",
                 "Cannot bind parameter 'CertificateRawData' to the target. Exception setting "
                 '"CertificateRawData": "Cannot find the requested object."')
    assert app(state, "partner") is None


@pytest.mark.parametrize("encoding", [serialization.Encoding.DER, serialization.Encoding.PEM])
def test_new_with_certificate_file(run: Runner, state: dict[str, Any], cert_der: bytes, tmp_path: Path,
                                   encoding: serialization.Encoding) -> None:
    path = tmp_path / "partner.cer"
    path.write_bytes(x509.load_der_x509_certificate(cert_der).public_bytes(encoding))
    assert run("New-CsPartnerApplication", Identity="partner", ApplicationIdentifier="p-1",
               ApplicationTrustLevel="Full", CertificateFileData=str(path), Realm="litwareinc.com").ok
    assert app(state, "partner")["CertificateRawData"] == base64.b64encode(cert_der).decode()  # type: ignore[index]


def test_new_with_bad_certificate_file(run: Runner, state: dict[str, Any], tmp_path: Path) -> None:
    missing = tmp_path / "missing.cer"
    prefix = ("Cannot bind parameter 'CertificateFileData' to the target. "
              'Exception setting "CertificateFileData": ')
    params = {"Identity": "partner", "ApplicationIdentifier": "p-1", "ApplicationTrustLevel": "Full",
              "Realm": "litwareinc.com"}
    assert fails(run("New-CsPartnerApplication", CertificateFileData=str(missing), **params),
                 "New-CsPartnerApplication", f"{prefix}\"Could not find file '{missing}'.\"")
    junk = tmp_path / "junk.cer"
    junk.write_text("not a certificate")
    assert fails(run("New-CsPartnerApplication", CertificateFileData=str(junk), **params),
                 "New-CsPartnerApplication", f'{prefix}"Cannot find the requested object."')
    assert app(state, "partner") is None


def _missing(*names: str) -> str:
    return "Cannot process command because of one or more missing mandatory parameters: " + " ".join(names) + "."


@pytest.mark.parametrize(
    "params,message",
    [
        ({"MetadataUrl": EXCHANGE_URL, "ApplicationTrustLevel": "Full", "ApplicationIdentifier": "x"}, AMBIGUOUS),
        ({"MetadataUrl": EXCHANGE_URL, "ApplicationTrustLevel": "Full", "Realm": "x"}, AMBIGUOUS),
        ({"MetadataUrl": EXCHANGE_URL, "ApplicationTrustLevel": "Full", "UseOAuthServer": True}, AMBIGUOUS),
        ({"MetadataUrl": EXCHANGE_URL, "ApplicationTrustLevel": "Full", "CertificateRawData": "AA=="}, AMBIGUOUS),
        ({"MetadataUrl": EXCHANGE_URL}, _missing("ApplicationTrustLevel")),  # one set: its mandatory one is missing
        ({"ApplicationIdentifier": "x", "UseOAuthServer": True}, _missing("ApplicationTrustLevel")),
        ({"ApplicationIdentifier": "x", "ApplicationTrustLevel": "Full"}, AMBIGUOUS),  # no set chosen
        ({"ApplicationIdentifier": "x", "ApplicationTrustLevel": "Full", "UseOAuthServer": False}, AMBIGUOUS),
        ({"UseOAuthServer": True, "ApplicationTrustLevel": "Full"}, _missing("ApplicationIdentifier")),
        ({"ApplicationIdentifier": "x", "ApplicationTrustLevel": "Full", "UseOAuthServer": True,
          "CertificateRawData": "AA==", "Realm": "r"}, AMBIGUOUS),
        ({"ApplicationIdentifier": "x", "ApplicationTrustLevel": "Full", "CertificateRawData": "AA=="},
         _missing("Realm")),
        ({"ApplicationIdentifier": "x", "ApplicationTrustLevel": "Full", "CertificateFileData": "a.cer"},
         _missing("Realm")),
        ({"ApplicationIdentifier": "x", "ApplicationTrustLevel": "Full", "CertificateRawData": "AA==",
          "CertificateFileData": "a.cer", "Realm": "r"}, AMBIGUOUS),
        ({"ApplicationTrustLevel": "Full", "Realm": "r"}, AMBIGUOUS),
    ],
)
def test_new_parameter_sets_are_exclusive(run: Runner, state: dict[str, Any], fetched: list[str],
                                          params: dict[str, Any], message: str) -> None:
    result = run("New-CsPartnerApplication", Identity="microsoft.sharepoint", **params)
    assert fails(result, "New-CsPartnerApplication", message)
    assert app(state, "microsoft.sharepoint") is None
    assert fetched == []


def test_new_bad_trust_level(run: Runner) -> None:
    result = run("New-CsPartnerApplication", Identity="x", ApplicationIdentifier="x", ApplicationTrustLevel="Partial",
                 UseOAuthServer=True)
    assert not result.ok
    assert (result.error or "").startswith(
        "New-CsPartnerApplication : Cannot bind parameter 'ApplicationTrustLevel'. "
        'Cannot convert value "Partial"')
    assert "Full, Application, User" in (result.error or "")


def test_new_bad_boolean(run: Runner) -> None:
    result = run("New-CsPartnerApplication", Identity="x", ApplicationIdentifier="x", ApplicationTrustLevel="Full",
                 UseOAuthServer=True, Enabled="false")
    assert not result.ok and "parameter 'Enabled'" in (result.error or "")


def test_new_existing_identity(run: Runner, state: dict[str, Any]) -> None:
    before = copy.deepcopy(app(state, "microsoft.exchange"))
    result = run("New-CsPartnerApplication", Identity="Microsoft.Exchange", MetadataUrl=EXCHANGE_URL,
                 ApplicationTrustLevel="Full")
    assert fails(result, "New-CsPartnerApplication",
                 '"PartnerApplication" with identity "Microsoft.Exchange" already exists.')
    assert app(state, "microsoft.exchange") == before
    assert len(objects(state, LITWARE, "PartnerApplication")) == 2


def test_new_missing_identity(run: Runner) -> None:
    assert fails(run("New-CsPartnerApplication", MetadataUrl=EXCHANGE_URL, ApplicationTrustLevel="Full"),
                 "New-CsPartnerApplication",
                 "Cannot process command because of one or more missing mandatory parameters: Identity.")


def test_new_null_realm_in_certificate_set(run: Runner) -> None:
    assert fails(run("New-CsPartnerApplication", Identity="p", ApplicationIdentifier="x", ApplicationTrustLevel="Full",
                     CertificateRawData="AA==", Realm=None), "New-CsPartnerApplication",
                 "Cannot bind argument to parameter 'Realm' because it is null.")


# --- Set-CsPartnerApplication -------------------------------------------------------------------


def test_set_common_properties(run: Runner, state: dict[str, Any], fetched: list[str]) -> None:
    assert run("Set-CsPartnerApplication", Identity="microsoft.exchange", ApplicationTrustLevel="FULL",
               Enabled=False, AcceptSecurityIdentifierInformation=1).ok
    exchange = app(state, "microsoft.exchange")
    assert exchange is not None
    assert (exchange["ApplicationTrustLevel"], exchange["Enabled"], exchange["AcceptSecurityIdentifierInformation"]) \
        == ("Full", False, True)
    assert exchange["ApplicationIdentifier"] == estate.WRONG_EXCHANGE_ID
    assert fetched == []


@pytest.mark.parametrize("name", ["ApplicationIdentifier", "Realm"])
def test_set_cannot_change_identifier_or_realm(run: Runner, state: dict[str, Any], name: str) -> None:
    before = copy.deepcopy(app(state, "microsoft.exchange"))
    result = run("Set-CsPartnerApplication", Identity="microsoft.exchange", **{name: "x"})
    assert fails(result, "Set-CsPartnerApplication",
                 f"A parameter cannot be found that matches parameter name '{name}'.")
    assert app(state, "microsoft.exchange") == before


def test_set_switches_the_form_in_place(run: Runner, state: dict[str, Any], fetched: list[str]) -> None:
    """Set-CsPartnerApplication has the UseOAuthServer, MetadataUrl and certificate parameter sets (Microsoft's
    syntax), and seed 004 runs `Set-CsPartnerApplication -ApplicationTrustLevel Full -UseOAuthServer` on an
    existing application: switching form is a Set."""
    result = run("Set-CsPartnerApplication", Identity="microsoft.exchange", UseOAuthServer=True,
                 ApplicationTrustLevel="Full")
    assert result.ok, result.error
    read = run("Get-CsPartnerApplication", Identity="microsoft.exchange").output[0]
    assert read["AuthToken"] == "Microsoft.Rtc.Management.WritableConfig.Settings.SSAuth.UseOAuthServer"
    assert run("Set-CsPartnerApplication", Identity="microsoft.exchange", MetadataUrl=EXCHANGE_URL).ok
    read = run("Get-CsPartnerApplication", Identity="microsoft.exchange").output[0]
    assert read["AuthToken"] == f"Value={EXCHANGE_URL}"
    assert fetched == [EXCHANGE_URL]
    assert fails(run("Set-CsPartnerApplication", Identity="app", UseOAuthServer=True, MetadataUrl=EXCHANGE_URL),
                 "Set-CsPartnerApplication", AMBIGUOUS)


def test_set_use_oauth_server_on_oauth_server_app(run: Runner) -> None:
    assert run("Set-CsPartnerApplication", Identity="app", UseOAuthServer=True, ApplicationTrustLevel="Full").ok


def test_set_metadata_url_downloads_again(run: Runner, state: dict[str, Any], fetched: list[str]) -> None:
    assert run("New-CsPartnerApplication", Identity="partner", MetadataUrl=EXCHANGE_URL,
               ApplicationTrustLevel="Full").ok
    assert run("Set-CsPartnerApplication", Identity="partner", MetadataUrl=SHAREPOINT_URL).ok
    assert fetched == [EXCHANGE_URL, SHAREPOINT_URL]
    partner = app(state, "partner")
    assert partner is not None
    assert (partner["MetadataUrl"], partner["ApplicationIdentifier"]) == (SHAREPOINT_URL, estate.SHAREPOINT_ID)
    assert fails(run("Set-CsPartnerApplication", Identity="partner", MetadataUrl=BAD_URL), "Set-CsPartnerApplication",
                 METADATA_BIND_ERROR)
    assert app(state, "partner")["MetadataUrl"] == SHAREPOINT_URL  # type: ignore[index]


def test_set_certificate(run: Runner, state: dict[str, Any], cert_der: bytes) -> None:
    raw = base64.b64encode(cert_der).decode()
    assert run("Set-CsPartnerApplication", Identity="microsoft.exchange", CertificateRawData=raw).ok
    assert app(state, "microsoft.exchange")["CertificateRawData"] == raw  # type: ignore[index]


def test_set_two_sets_at_once(run: Runner) -> None:
    assert fails(run("Set-CsPartnerApplication", Identity="app", UseOAuthServer=True, MetadataUrl=EXCHANGE_URL),
                 "Set-CsPartnerApplication", AMBIGUOUS)


def test_set_missing_application(run: Runner) -> None:
    assert fails(run("Set-CsPartnerApplication", Identity="microsoft.sharepoint", Enabled=True),
                 "Set-CsPartnerApplication",
                 'Cannot find "PartnerApplication" "microsoft.sharepoint" because it does not exist.')


# --- injected failures and batches -------------------------------------------------------------


def test_injected_failure_for_one_identity(run: Runner, state: dict[str, Any]) -> None:
    state["failures"] = [{"host": LITWARE, "cmdlet": "remove-cspartnerapplication", "identity": "microsoft.exchange",
                          "times": 2, "message": "Access is denied."}]
    assert run("Remove-CsPartnerApplication", Identity="app").ok  # other identity: not affected
    assert fails(run("Remove-CsPartnerApplication", Identity="Microsoft.Exchange"), "Remove-CsPartnerApplication",
                 "Access is denied.")
    assert state["failures"][0]["times"] == 1
    assert fails(run("Remove-CsPartnerApplication", Identity="microsoft.exchange"), "Remove-CsPartnerApplication",
                 "Access is denied.")
    assert state["failures"] == []
    assert app(state, "microsoft.exchange") is not None  # the failed commands did nothing
    assert run("Remove-CsPartnerApplication", Identity="microsoft.exchange").ok


def test_injected_failure_any_identity_other_host(run: Runner, state: dict[str, Any]) -> None:
    state["failures"] = [{"host": FABRIKAM, "cmdlet": "Get-CsOAuthServer", "identity": None, "times": 1,
                          "message": None}]
    assert run("Get-CsOAuthServer").ok  # other host
    result = run("Get-CsOAuthServer", host=FABRIKAM)
    assert not result.ok and (result.error or "").startswith("Get-CsOAuthServer : ")
    assert run("Get-CsOAuthServer", host=FABRIKAM).ok


def test_injected_message_keeps_a_given_prefix(run: Runner, state: dict[str, Any]) -> None:
    state["failures"] = [{"host": LITWARE, "cmdlet": "Get-CsOAuthServer", "times": 1,
                          "message": "Get-CsOAuthServer : The WinRM client cannot process the request."}]
    assert run("Get-CsOAuthServer").error == "Get-CsOAuthServer : The WinRM client cannot process the request."


def _batch(state: dict[str, Any], context: CmdletContext, stop_on_error: bool) -> list[CommandResult]:
    commands = [
        Command("Remove-CsPartnerApplication", {"Identity": "app"}),
        Command("Remove-CsPartnerApplication", {"Identity": "missing"}),
        Command("Set-CsPartnerApplication", {"Identity": "microsoft.exchange", "Enabled": False}),
    ]
    return execute_batch(state, LITWARE, commands, stop_on_error=stop_on_error, context=context)


def test_batch_stops_at_first_failure(state: dict[str, Any], context: CmdletContext) -> None:
    results = _batch(state, context, stop_on_error=True)
    assert [r.ok for r in results] == [True, False]
    host = state["hosts"][LITWARE]
    assert host["roundTrips"] == 1
    assert host["calls"] == {"Remove-CsPartnerApplication": 2}
    assert app(state, "app") is None
    assert app(state, "microsoft.exchange")["Enabled"] is True  # type: ignore[index]


def test_batch_can_continue_after_failure(state: dict[str, Any], context: CmdletContext) -> None:
    results = _batch(state, context, stop_on_error=False)
    assert [r.ok for r in results] == [True, False, True]
    assert state["hosts"][LITWARE]["calls"] == {"Remove-CsPartnerApplication": 2, "Set-CsPartnerApplication": 1}
    assert app(state, "microsoft.exchange")["Enabled"] is False  # type: ignore[index]


# --- the transport ------------------------------------------------------------------------------


def target(state_path: Path, host: str = LITWARE, **extra: Any) -> TargetSpec:
    return TargetSpec(name="pool", provider="skype",
                      connection={"transport": "lab", "state": str(state_path), "host": host, **extra})


def test_transport_satisfies_the_protocols(lab_state: Path) -> None:
    factory: TransportFactory = LabTransport
    transport: Transport = factory.from_target(target(lab_state))
    assert LabTransport.connection_schema["required"] == ["host"]
    assert LabTransport.connection_schema["additionalProperties"] is False
    transport.close()


def test_transport_state_is_relative_to_the_working_directory(lab_state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(lab_state.parent.parent)
    transport = LabTransport.from_target(TargetSpec("pool", "skype", {"state": "lab/state.json", "host": LITWARE}))
    assert transport.store.path == lab_state
    default = LabTransport.from_target(TargetSpec("pool", "skype", {"host": LITWARE}))
    assert default.store.path == lab_state.parent.parent / ".lab" / "state.json"


@pytest.mark.parametrize("connection", [{}, {"host": ""}, {"host": LITWARE, "latencyMs": -1},
                                        {"host": LITWARE, "latencyMs": "fast"}, {"host": LITWARE, "state": 3}])
def test_transport_rejects_bad_connections(connection: dict[str, Any]) -> None:
    with pytest.raises(TransportError):
        LabTransport.from_target(TargetSpec("pool", "skype", connection))


def test_one_round_trip_per_invoke(lab_state: Path) -> None:
    transport = LabTransport.from_target(target(lab_state))
    results = transport.invoke([Command("Get-CsOAuthConfiguration"), Command("Get-CsOAuthServer"),
                                Command("Get-CsPartnerApplication")])
    transport.invoke([Command("Get-CsPartnerApplication")])
    transport.close()
    assert [r.ok for r in results] == [True, True, True]
    assert len(results[2].output) == 2
    host = LabStore(lab_state).read()["hosts"][LITWARE]
    assert host["roundTrips"] == 2
    assert host["calls"] == {"Get-CsOAuthConfiguration": 1, "Get-CsOAuthServer": 1, "Get-CsPartnerApplication": 2}


def test_read_only_round_trips_are_folded_not_lost(lab_state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A read-only loop appends a line per round trip; past a size the lines fold into one per host, with every
    # round trip and call still counted, and the state file itself never rewritten.
    monkeypatch.setattr("reconciler.lab.state.TRIPS_FOLD_BYTES", 300)
    store = LabStore(lab_state)
    written = lab_state.stat().st_mtime_ns
    transport = LabTransport.from_target(target(lab_state))
    for _ in range(40):
        assert all(r.ok for r in transport.invoke([Command("Get-CsOAuthServer"), Command("Get-CsPartnerApplication")]))
    transport.close()
    lines = store.trips_path.read_text(encoding="utf-8").splitlines()
    assert len(lines) < 10 and any('"trips":' in line for line in lines)
    host = store.read()["hosts"][LITWARE]
    assert host["roundTrips"] == 40
    assert host["calls"] == {"Get-CsOAuthServer": 40, "Get-CsPartnerApplication": 40}
    assert lab_state.stat().st_mtime_ns == written
    with store.edit() as state:  # a write folds the counts into the state and starts the lines afresh
        state["hosts"][LITWARE]["objects"]["OAuthConfiguration"]["Realm"] = "folded.example"
    assert not store.trips_path.exists() and store.read()["hosts"][LITWARE]["roundTrips"] == 40


def test_a_batch_of_gets_that_writes_after_all_keeps_the_counts_of_earlier_reads(lab_state: Path) -> None:
    """A batch of Gets reads the state without the counts of earlier reads (kept apart, `<state>.trips`); one that
    consumes an injected failure writes the state, and adds those counts first: none is lost, none counted twice."""
    store = LabStore(lab_state)
    add_failure(lab_state, LITWARE, "Get-CsPartnerApplication", times=1)
    transport = LabTransport.from_target(target(lab_state))
    for _ in range(3):
        assert transport.invoke([Command("Get-CsOAuthServer")])[0].ok
    assert store.trips_path.exists() and store.read()["hosts"][LITWARE]["roundTrips"] == 3
    results = transport.invoke([Command("Get-CsOAuthServer"), Command("Get-CsPartnerApplication")],
                               stop_on_error=False)
    transport.close()
    assert [r.ok for r in results] == [True, False]
    state = store.read()
    assert state["hosts"][LITWARE]["roundTrips"] == 4
    assert state["hosts"][LITWARE]["calls"] == {"Get-CsOAuthServer": 4, "Get-CsPartnerApplication": 1}
    assert state.get("failures") == []
    assert not store.trips_path.exists()  # the batch wrote the state: the counts are in it


def test_a_round_trip_line_being_appended_is_not_counted_yet(lab_state: Path) -> None:
    store = LabStore(lab_state)
    transport = LabTransport.from_target(target(lab_state))
    transport.invoke([Command("Get-CsOAuthServer")])
    transport.close()
    with open(store.trips_path, "a", encoding="utf-8") as out:
        out.write('{"host": "' + LITWARE + '", "calls": {"Get-CsOAuth')  # a reader sees the line half written
    assert store.read()["hosts"][LITWARE]["roundTrips"] == 1


def test_threads_take_turns_on_one_state(lab_state: Path) -> None:
    # Many threads writing one state at once: every change lands (the OS lock excludes threads of one process too).
    from concurrent.futures import ThreadPoolExecutor

    def add(index: int) -> bool:
        transport = LabTransport.from_target(target(lab_state))
        try:
            return transport.invoke([Command("New-CsPartnerApplication", {
                "Identity": f"app-{index}.example", "ApplicationIdentifier": f"app-{index}",
                "ApplicationTrustLevel": "Full", "UseOAuthServer": True})])[0].ok
        finally:
            transport.close()

    with ThreadPoolExecutor(max_workers=16) as pool:
        assert all(pool.map(add, range(32)))
    names = {a["Identity"] for a in objects(LabStore(lab_state).read(), LITWARE, "PartnerApplication")}
    assert {f"app-{i}.example" for i in range(32)} <= names


def test_partial_batch_is_persisted(lab_state: Path) -> None:
    transport = LabTransport.from_target(target(lab_state))
    results = transport.invoke([
        Command("Remove-CsPartnerApplication", {"Identity": "app"}),
        Command("Set-CsPartnerApplication", {"Identity": "microsoft.exchange", "Realm": "x"}),
        Command("Remove-CsPartnerApplication", {"Identity": "microsoft.exchange"}),
    ])
    assert [r.ok for r in results] == [True, False]
    saved = LabStore(lab_state).read()
    assert [a["Identity"] for a in objects(saved, LITWARE, "PartnerApplication")] == ["microsoft.exchange"]


def test_injected_failure_is_consumed_in_the_file(lab_state: Path) -> None:
    with LabStore(lab_state).edit() as state:
        state["failures"] = [{"host": LITWARE, "cmdlet": "Get-CsPartnerApplication", "times": 1, "message": "boom"}]
    transport = LabTransport.from_target(target(lab_state))
    assert transport.invoke([Command("Get-CsPartnerApplication")])[0].error == "Get-CsPartnerApplication : boom"
    assert transport.invoke([Command("Get-CsPartnerApplication")])[0].ok
    assert LabStore(lab_state).read()["failures"] == []


def test_unknown_host(lab_state: Path) -> None:
    transport = LabTransport.from_target(target(lab_state, host="nowhere"))
    with pytest.raises(TransportError, match=r"no host 'nowhere'.*atl-cs-001"):
        transport.invoke([Command("Get-CsOAuthServer")])


def test_host_names_are_case_insensitive(lab_state: Path) -> None:
    transport = LabTransport.from_target(target(lab_state, host="ATL-CS-001"))
    assert transport.invoke([Command("Get-CsOAuthServer")])[0].ok


def test_missing_state_file(tmp_path: Path) -> None:
    transport = LabTransport.from_target(target(tmp_path / "none" / "state.json"))
    with pytest.raises(TransportError, match="reconcile lab init"):
        transport.invoke([Command("Get-CsOAuthServer")])
    assert not (tmp_path / "none").exists()  # no lock file left where there is no lab


def test_latency_is_paid_once_per_round_trip(lab_state: Path) -> None:
    transport = LabTransport.from_target(target(lab_state, latencyMs=150))
    started = time.monotonic()
    transport.invoke([Command("Get-CsOAuthServer")] * 5)
    elapsed = time.monotonic() - started
    assert 0.15 <= elapsed < 0.6


def test_closed_transport(lab_state: Path) -> None:
    transport = LabTransport.from_target(target(lab_state))
    transport.close()
    with pytest.raises(TransportError):
        transport.invoke([Command("Get-CsOAuthServer")])


def test_parameter_values_are_only_data(lab_state: Path) -> None:
    sneaky = "x'; Remove-CsPartnerApplication -Identity app; '"
    transport = LabTransport.from_target(target(lab_state))
    result = transport.invoke([Command("Set-CsOAuthConfiguration", {"Realm": sneaky})])[0]
    assert result.ok
    saved = LabStore(lab_state).read()
    assert objects(saved, LITWARE, "OAuthConfiguration")["Realm"] == sneaky
    assert app(saved, "app") is not None
    json.dumps(saved)  # still plain JSON


def test_a_get_changes_nothing_in_the_state_but_its_counts() -> None:
    """What the lab transport counts on for a batch of Gets (`reads_only`) its platform does not list as
    `changed_by_reading`: it keeps no copy of the state to tell whether the batch changed it, only the injected
    failures a Get may consume. Every such Get of every platform, with no parameters and as each provider's discovery
    sends it, on every host of the default estate (and every read-only round trip of the test suite is checked the
    same way: RECONCILE_LAB_CHECK_READS)."""
    from reconciler.lab.emulator import platform
    from reconciler.providers import exchange, sharepoint, skype

    discovery = [*skype._DISCOVERY, *skype.certificate.DISCOVERY, *exchange._DISCOVERY,
                 *exchange._ENTERPRISE_DISCOVERY, exchange._OVERRIDES, exchange._ORGANIZATION,
                 sharepoint._ISSUER_DISCOVERY, sharepoint._REALM_DISCOVERY]
    original = estate.default_estate()
    for host, record in original["hosts"].items():
        plat = platform(str(record.get("platform", "skype")))
        gets = [Command(name) for name in plat.cmdlets if name.lower().startswith("get-")]
        gets += [c for c in discovery if plat.cmdlet_name(c.cmdlet) is not None]
        gets = [c for c in gets if plat.cmdlet_name(c.cmdlet) not in plat.changed_by_reading]
        assert gets, host
        for command in gets:
            state = copy.deepcopy(original)
            execute_batch(state, host, [command], stop_on_error=False, context=CmdletContext(fetch=_no_fetch),
                          copy_output=False)
            for counted in ("roundTrips", "calls"):
                state["hosts"][host].pop(counted, None)
            expected = copy.deepcopy(original)
            for counted in ("roundTrips", "calls"):
                expected["hosts"][host].pop(counted, None)
            assert state == expected, (host, command.cmdlet)


def _no_fetch(url: str) -> MetadataDocument:
    raise MetadataError(f"no download in this test: {url}")


def test_a_get_that_changes_the_state_undeclared_is_caught_when_reads_are_checked(
        lab_state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Exchange's Get-AuthConfig makes a staged certificate current once its date has passed: declared, it is saved;
    a platform that did not declare such a Get would lose the change, which the check mode reports."""
    from reconciler.lab import emulator, skype

    def touching(cmdlet: str, params: Any, objects: dict[str, Any], context: CmdletContext) -> list[dict[str, Any]]:
        objects["OAuthConfiguration"]["Realm"] = "changed.by.reading"
        return []

    plat = emulator.platform("skype")
    monkeypatch.setattr(skype, "PLATFORM", dataclasses.replace(plat, cmdlets={**plat.cmdlets,
                                                                              "Get-CsOAuthServer": touching}))
    transport = LabTransport.from_target(target(lab_state))
    monkeypatch.setenv("RECONCILE_LAB_CHECK_READS", "1")
    with pytest.raises(TransportError, match="changed the state of atl-cs-001 on its own"):
        transport.invoke([Command("Get-CsOAuthServer")])
    monkeypatch.setattr(skype, "PLATFORM", dataclasses.replace(
        plat, cmdlets={**plat.cmdlets, "Get-CsOAuthServer": touching},
        changed_by_reading=frozenset({"Get-CsOAuthServer"})))
    transport.invoke([Command("Get-CsOAuthServer")])
    assert LabStore(lab_state).read()["hosts"][LITWARE]["objects"]["OAuthConfiguration"]["Realm"] == \
        "changed.by.reading"
