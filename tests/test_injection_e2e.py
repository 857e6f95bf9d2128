"""Injection payloads in manifest strings reach the cmdlets as literal values (here: the lab's state).

The same corpus is checked at each real transport's boundary (tests/test_transport_pwsh.py,
tests/test_transport_winrm.py); this test covers manifest -> plan -> commands -> lab.
"""

from __future__ import annotations

import json

import pytest

from reconciler.lab import certs
from tests.e2e import Estate

PAYLOADS = [
    "a'; Remove-Item C:\\ -Recurse; '",
    'q"uote',
    "$(Stop-Computer -Force)",
    "x; Stop-Computer",
    "back`tick`n",
    "@{a=1}",
    "$env:PATH",
    "p | Out-File c:\\x",
    "amp & calc.exe",
    "ünïcødé ✓",
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_payloads_arrive_literally(estate: Estate, payload: str) -> None:
    cert = certs.b64(certs.make_certificate("inj.example"))
    realm = payload + "\nsecond line"
    manifest = estate.write("inj.yaml", f"""\
apiVersion: reconciler/v1
targets:
  pool:
    provider: skype
    connection: {{transport: lab, host: atl-cs-001}}
resources:
  - target: pool
    kind: PartnerApplication
    identity: {json.dumps(payload)}
    applicationIdentifier: 6f2a9c1e-0b3d-4e5f-8a7b-9c0d1e2f3a4b
    certificateRawData: {cert}
    realm: {json.dumps(realm)}
    applicationTrustLevel: Full
  - target: pool
    kind: OAuthConfiguration
    realm: {json.dumps(payload)}
    exchangeAutodiscoverAllowedDomains: {json.dumps(payload)}
    clientAuthorizationOAuthServerIdentity: {json.dumps(payload)}
""")
    run = estate.reconcile("apply", manifest, "--auto-approve")
    assert run.code == 0, run.out + run.err
    app = estate.app("atl-cs-001", payload)
    assert app is not None and app["Identity"] == payload and app["Realm"] == realm
    config = estate.objects("atl-cs-001", "OAuthConfiguration")
    assert config["Realm"] == payload
    assert config["ExchangeAutodiscoverAllowedDomains"] == payload
    assert config["ClientAuthorizationOAuthServerIdentity"] == payload
    assert estate.reconcile("plan", manifest, "--detailed-exitcode").code == 0
