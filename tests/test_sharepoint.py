"""SharePoint's declared kinds (reconciler.kinds.sharepoint) and its lab platform (reconciler.lab.sharepoint)."""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.commands import Command
from reconciler.errors import CommandSyntaxError, MetadataError
from reconciler.kinds import sharepoint as declared
from reconciler.lab import certs
from reconciler.lab import sharepoint as lab
from reconciler.lab.emulator import CmdletContext, run_command
from reconciler.metadata import MetadataDocument, SigningKey
from reconciler.model import ResourceKey, TargetSpec
from reconciler.providers.sharepoint import SharePointProvider

ISSUERS = declared.TRUSTED_SECURITY_TOKEN_ISSUER
URL = "https://atl-exchange-001.litwareinc.com/autodiscover/metadata/json/1"
EXCHANGE = "00000002-0000-0ff1-ce00-000000000000"


@pytest.fixture(scope="module")
def der() -> bytes:
    return certs.make_certificate("atl-exchange-001.litwareinc.com")


def document(der: bytes, url: str = URL) -> MetadataDocument:
    return MetadataDocument(url, EXCHANGE, "litwareinc.com", f"{EXCHANGE}@litwareinc.com", "Exchange",
                            (SigningKey(None, der),))


def context(der: bytes) -> CmdletContext:
    def fetch(url: str) -> MetadataDocument:
        if "down" in url:
            raise MetadataError(url, "connection refused")
        return document(der, url)
    return CmdletContext(fetch=fetch)


def state(der: bytes) -> dict[str, Any]:
    return {"hosts": {"sp": {"platform": "sharepoint", "objects": lab.empty_objects()}}, "failures": []}


# --- the declaration ----------------------------------------------------------------------------------


def test_nothing_forces_a_replace_because_set_has_every_parameter_new_has_but_the_name() -> None:
    assert all(f.replace_reason is None for f in ISSUERS.spec().fields.values())
    assert ISSUERS.set is not None
    assert not ISSUERS.set.settable("Name") and ISSUERS.set.settable("MetadataEndPoint")


def test_switches_and_typed_parameters_are_as_documented() -> None:
    new = declared.NEW_SP_TRUSTED_SECURITY_TOKEN_ISSUER
    assert new.parameters["IsTrustBroker"].type.value == "SwitchParameter"
    assert new.parameters["MetadataEndPoint"].type.value == "String"
    assert {s.name for s in new.sets} == {"ImportCertificateParameterSet", "MetadataEndPointParameterSet"}
    with pytest.raises(CommandSyntaxError, match="Parameter set cannot be resolved"):
        new.bind({"Name": "x", "MetadataEndPoint": URL, "Certificate": "QUJD"})
    # the two Set sets differ only in -Certificate / -MetadataEndPoint, and no default set is documented
    with pytest.raises(CommandSyntaxError, match="Parameter set cannot be resolved"):
        declared.SET_SP_TRUSTED_SECURITY_TOKEN_ISSUER.bind({"Identity": "x", "Description": "d"})


def test_a_description_change_names_the_endpoint_and_the_whole_wanted_state() -> None:
    live = {"metadataEndPoint": URL, "isTrustBroker": False, "description": "old"}
    (command,) = ISSUERS.set_commands("Exchange", ["description"], {**live, "description": "new"},
                                      {"description": "new"})
    assert command.parameters == {"Identity": "Exchange", "MetadataEndPoint": URL, "IsTrustBroker": False,
                                  "Description": "new"}
    declared.SET_SP_TRUSTED_SECURITY_TOKEN_ISSUER.bind(command.parameters)
    assert "-IsTrustBroker:$false" in command.display()


def test_get_output_is_read_as_sharepointdsc_reads_it(der: bytes) -> None:
    obj = lab._as_read(lab.issuer_from("Skype", document(der), URL + "/", trust_broker=True))
    identity, fields = ISSUERS.parse(obj)
    assert identity == "Skype"
    assert fields["isTrustBroker"] is True  # IsSelfIssuer false
    assert fields["signingCertificateThumbprint"] == certs.thumbprint(der)  # from the certificate's text
    assert fields["registeredIssuerName"] == f"{EXCHANGE}@litwareinc.com"
    assert ISSUERS.spec().fields["metadataEndPoint"].equal is not None
    assert declared.read_metadata_endpoint({"metadataendpoint": {"OriginalString": URL}}) == URL
    assert declared.read_signing_thumbprint({"signingcertificate": {"Thumbprint": "ab" * 20}}) == "AB" * 20
    assert declared.read_is_trust_broker({}) is None


def test_the_provider_reads_the_realm_only_when_declared_and_as_a_bare_string() -> None:
    calls: list[tuple[str, ...]] = []

    class Transport:
        def invoke(self, commands: Any, *, stop_on_error: bool = True) -> list[Any]:
            from reconciler.commands import CommandResult
            calls.append(tuple(c.cmdlet for c in commands))
            outputs: dict[str, tuple[Any, ...]] = {"Get-SPTrustedSecurityTokenIssuer": (),
                                                   "Get-SPAuthenticationRealm": ("litwareinc.com",)}
            return [CommandResult(c, True, outputs[c.cmdlet]) for c in commands]

        def close(self) -> None:
            pass

    target = TargetSpec("sp", "sharepoint", {"transport": "lab"})
    provider = SharePointProvider()
    assert provider.discover(target, Transport(), ()).resources == {}
    wanted = (ResourceKey("sp", "AuthenticationRealm", "Global"),)
    live = provider.discover(target, Transport(), wanted)
    assert live.resources[wanted[0]].fields == {"realm": "litwareinc.com"}
    assert calls == [("Get-SPTrustedSecurityTokenIssuer",),
                     ("Get-SPTrustedSecurityTokenIssuer", "Get-SPAuthenticationRealm")]


def test_the_provider_runs_the_grant_cmdlets_and_never_removes_a_grant() -> None:
    names = {c.name for c in SharePointProvider.syntax}
    assert {"Get-SPAppPrincipal", "Set-SPAppPrincipalPermission"} <= names
    assert "Remove-SPAppPrincipalPermission" not in names  # declared from the reference, never run
    assert declared.SET_SP_APP_PRINCIPAL_PERMISSION.resolve({"AppPrincipal", "Right", "Scope", "Site"})
    assert declared.REMOVE_SP_APP_PRINCIPAL_PERMISSION.resolve({"AppPrincipal", "Scope", "Site"})


# --- the lab ----------------------------------------------------------------------------------------------


def run(st: dict[str, Any], der: bytes, cmdlet: str, **params: Any) -> Any:
    return run_command(st, "sp", Command(cmdlet, params), context(der))


def test_lab_new_downloads_the_document_and_get_writes_the_real_shapes(der: bytes) -> None:
    st = state(der)
    made = run(st, der, "New-SPTrustedSecurityTokenIssuer", Name="Exchange", MetadataEndPoint=URL)
    assert made.ok, made.error
    (got,) = run(st, der, "Get-SPTrustedSecurityTokenIssuer").output
    assert got["RegisteredIssuerName"] == f"{EXCHANGE}@litwareinc.com" and got["IsSelfIssuer"] is True
    assert f"[Thumbprint]\r\n  {certs.thumbprint(der)}" in got["SigningCertificate"]
    assert run(st, der, "Get-SPAuthenticationRealm").output == ("",)  # a bare string, as the cmdlet writes it


def test_lab_new_fails_when_the_endpoint_cannot_be_read(der: bytes) -> None:
    st = state(der)
    result = run(st, der, "New-SPTrustedSecurityTokenIssuer", Name="X", MetadataEndPoint="https://down/metadata")
    assert not result.ok
    assert result.error.startswith("New-SPTrustedSecurityTokenIssuer : The metadata endpoint https://down/metadata "
                                   "could not be read")
    assert st["hosts"]["sp"]["objects"]["TrustedSecurityTokenIssuer"] == []


@pytest.mark.parametrize("cmdlet,params,message", [
    ("New-SPTrustedSecurityTokenIssuer", {"Name": "x", "MetadataEndPoint": URL, "Realm": "r"},
     "A parameter cannot be found that matches parameter name 'Realm'."),
    ("New-SPTrustedSecurityTokenIssuer", {"Name": "x"}, "Parameter set cannot be resolved"),
    ("New-SPTrustedSecurityTokenIssuer", {"Name": "x", "MetadataEndPoint": URL, "IsTrustBroker": "yes"},
     "Boolean parameters accept only Boolean values"),
    ("Set-SPTrustedSecurityTokenIssuer", {"Identity": "x", "Name": "y", "MetadataEndPoint": URL},
     "A parameter cannot be found that matches parameter name 'Name'."),
    ("Set-SPTrustedSecurityTokenIssuer", {"Identity": "x", "Description": "d"}, "Parameter set cannot be resolved"),
    ("Remove-SPTrustedSecurityTokenIssuer", {}, "missing mandatory parameters: Identity."),
    ("Set-SPAuthenticationRealm", {"Identity": "Farm", "Realm": "r"},
     "A parameter cannot be found that matches parameter name 'Identity'."),
    ("Set-SPAppPrincipalPermission", {"Site": "x"},
     "missing mandatory parameters: AppPrincipal Right Scope."),
    ("Set-SPAppPrincipalPermission", {"AppPrincipal": "00000002-0000-0ff1-ce00-000000000000@litwareinc.com",
                                      "Site": URL, "Right": "FullControl", "Scope": "SiteSubscription"},
     "Cannot bind parameter 'AppPrincipal'. Cannot convert the \"00000002-0000-0ff1-ce00-000000000000@litwareinc.com"
     "\" value of type \"System.String\" to type \"Microsoft.SharePoint.SPAppPrincipal\"."),
    ("Get-SPAppPrincipal", {"NameIdentifier": "x@y"}, "missing mandatory parameters: Site."),
])
def test_lab_refuses_calls_outside_the_documented_sets(der: bytes, cmdlet: str, params: dict[str, Any],
                                                        message: str) -> None:
    st = state(der)
    result = run(st, der, cmdlet, **params)
    assert not result.ok and message in str(result.error)
    assert st["hosts"]["sp"]["objects"] == lab.empty_objects()


def test_lab_set_and_remove(der: bytes) -> None:
    st = state(der)
    assert run(st, der, "New-SPTrustedSecurityTokenIssuer", Name="Skype", MetadataEndPoint=URL).ok
    assert run(st, der, "Set-SPTrustedSecurityTokenIssuer", Identity="skype", MetadataEndPoint=URL,
               IsTrustBroker=True, Description="pool").ok
    (obj,) = st["hosts"]["sp"]["objects"]["TrustedSecurityTokenIssuer"]
    assert obj["IsSelfIssuer"] is False and obj["Description"] == "pool"
    assert run(st, der, "Set-SPAuthenticationRealm", Realm="litwareinc.com").ok
    assert run(st, der, "Get-SPAuthenticationRealm").output == ("litwareinc.com",)
    assert run(st, der, "Remove-SPTrustedSecurityTokenIssuer", Identity="Skype").ok
    missing = run(st, der, "Remove-SPTrustedSecurityTokenIssuer", Identity="Skype")
    assert not missing.ok and "does not exist" in str(missing.error)
