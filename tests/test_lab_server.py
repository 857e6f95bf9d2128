"""The lab HTTP server over real loopback HTTP, and cmdlets downloading documents from it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from reconciler.errors import METADATA_ERROR, MetadataError
from reconciler.lab import certs, estate
from reconciler.lab.admin import set_document_status
from reconciler.lab.server import LabServer
from reconciler.lab.state import LabStore
from reconciler.lab.transport import LabTransport
from reconciler.metadata import fetch_metadata, parse_metadata
from reconciler.model import TargetSpec
from reconciler.transports.base import Command


def url(server: LabServer, path: str) -> str:
    return server.base_url + path


def service_thumbprint(state_path: Path, service: str) -> str:
    return certs.thumbprint(certs.from_b64(LabStore(state_path).read()["services"][service]["certificate"]))


def test_healthz(lab_server: LabServer) -> None:
    response = httpx.get(url(lab_server, "/healthz"))
    assert (response.status_code, response.text) == (200, "ok")


def test_base_url_has_the_real_port(lab_server: LabServer) -> None:
    assert lab_server.base_url.startswith("http://127.0.0.1:")
    assert not lab_server.base_url.endswith(":0")


def test_exchange_document(lab_server: LabServer, lab_state: Path) -> None:
    response = httpx.get(url(lab_server, estate.EXCHANGE_PATH))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    raw: dict[str, Any] = response.json()
    service = estate.EXCHANGE_ID
    assert raw["serviceName"] == service
    assert raw["realm"] == "litwareinc.com"
    assert raw["issuer"] == f"{service}@litwareinc.com"
    assert raw["allowedAudiences"] == [f"{service}@litwareinc.com"]
    assert raw["keys"][0]["usage"] == "signing"
    assert raw["keys"][0]["keyvalue"]["type"] == "x509Certificate"
    assert raw["endpoints"][0] == {"location": url(lab_server, estate.EXCHANGE_PATH), "protocol": "OAuth2",
                                   "usage": "metadata"}
    doc = parse_metadata("u", response.content)
    assert doc.keys[0].thumbprint == service_thumbprint(lab_state, "exchange")
    assert doc.keys[0].x5t == certs.x5t(doc.keys[0].certificate_der)


@pytest.mark.parametrize("path", [estate.SHAREPOINT_PATH, estate.SHAREPOINT_PATH_15])
def test_sharepoint_documents(lab_server: LabServer, lab_state: Path, path: str) -> None:
    raw = httpx.get(url(lab_server, path)).json()
    assert "realm" not in raw
    assert raw["keys"][0]["usage"] == "Signing"
    assert raw["keys"][0]["keyValue"]["type"] == "x509certificate"
    doc = fetch_metadata(url(lab_server, path))
    assert (doc.service_name, doc.realm) == (estate.SHAREPOINT_ID, "litwareinc.com")
    assert doc.keys[0].thumbprint == service_thumbprint(lab_state, "sharepoint")


def test_acs_and_skype_documents(lab_server: LabServer) -> None:
    acs = fetch_metadata(url(lab_server, estate.ACS_PATH))
    assert "serviceName" not in httpx.get(url(lab_server, estate.ACS_PATH)).json()
    assert (acs.service_name, acs.realm, acs.issuer) == (
        estate.ACS_ID, estate.LAB_TENANT_ID, f"{estate.ACS_ID}@{estate.LAB_TENANT_ID}")
    skype = fetch_metadata(url(lab_server, estate.SKYPE_PATH))
    assert (skype.service_name, skype.realm) == (estate.SKYPE_ID, "litwareinc.com")


def test_each_service_has_its_own_certificate(lab_server: LabServer) -> None:
    paths = [estate.EXCHANGE_PATH, estate.SHAREPOINT_PATH, estate.SKYPE_PATH, estate.ACS_PATH]
    thumbprints = {fetch_metadata(url(lab_server, p)).keys[0].thumbprint for p in paths}
    assert len(thumbprints) == 4


def test_paths_match_ignoring_case(lab_server: LabServer) -> None:
    assert httpx.get(url(lab_server, estate.EXCHANGE_PATH.upper())).status_code == 200


def test_unknown_path(lab_server: LabServer) -> None:
    assert httpx.get(url(lab_server, "/atl-exchange-001.litwareinc.com/nothing")).status_code == 404


def test_invalid_status(lab_server: LabServer, lab_state: Path) -> None:
    set_document_status(lab_state, estate.EXCHANGE_PATH, "invalid")
    response = httpx.get(url(lab_server, estate.EXCHANGE_PATH))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    with pytest.raises(MetadataError) as caught:
        fetch_metadata(url(lab_server, estate.EXCHANGE_PATH))
    assert caught.value.detail == "not JSON"


def test_notfound_status(lab_server: LabServer, lab_state: Path) -> None:
    set_document_status(lab_state, estate.EXCHANGE_PATH, "notfound")
    assert httpx.get(url(lab_server, estate.EXCHANGE_PATH)).status_code == 404
    with pytest.raises(MetadataError, match="HTTP 404"):
        fetch_metadata(url(lab_server, estate.EXCHANGE_PATH))


def test_unreachable_status(lab_server: LabServer, lab_state: Path) -> None:
    set_document_status(lab_state, estate.EXCHANGE_PATH, "unreachable")
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(url(lab_server, estate.EXCHANGE_PATH))
    with pytest.raises(MetadataError) as caught:
        fetch_metadata(url(lab_server, estate.EXCHANGE_PATH))
    assert caught.value.detail.startswith("connection failed")
    set_document_status(lab_state, estate.EXCHANGE_PATH, "ok")  # and back, without a restart
    assert fetch_metadata(url(lab_server, estate.EXCHANGE_PATH)).service_name == estate.EXCHANGE_ID


def test_server_never_waits_for_the_writers_lock(lab_server: LabServer, lab_state: Path) -> None:
    with LabStore(lab_state).locked():
        response = httpx.get(url(lab_server, estate.EXCHANGE_PATH), timeout=2)
    assert response.status_code == 200


def test_missing_state_answers_503(tmp_path: Path) -> None:
    with LabServer(tmp_path / "none.json", port=0) as server:
        response = httpx.get(url(server, estate.EXCHANGE_PATH))
    assert response.status_code == 503
    assert "reconcile lab init" in response.text


def test_start_and_stop(lab_state: Path) -> None:
    server = LabServer(lab_state, port=0)
    with pytest.raises(RuntimeError):
        _ = server.base_url
    server.start()
    base = server.base_url
    assert httpx.get(base + "/healthz").status_code == 200
    server.stop()
    server.stop()  # idempotent
    with pytest.raises(httpx.ConnectError):
        httpx.get(base + "/healthz", timeout=1)


def test_no_request_logging(lab_server: LabServer, capfd: pytest.CaptureFixture[str]) -> None:
    httpx.get(url(lab_server, estate.EXCHANGE_PATH))
    httpx.get(url(lab_server, "/missing"))
    assert capfd.readouterr().err == ""


# --- cmdlets downloading from the server, through the transport (the lock is held meanwhile) ---


def transport(lab_state: Path, host: str = "atl-cs-001") -> LabTransport:
    return LabTransport.from_target(TargetSpec("pool", "skype", {"state": str(lab_state), "host": host}))


def test_new_partner_application_from_lab_metadata(lab_server: LabServer, lab_state: Path) -> None:
    lab = transport(lab_state)
    sharepoint = url(lab_server, estate.SHAREPOINT_PATH)
    results = lab.invoke([
        Command("Remove-CsPartnerApplication", {"Identity": "microsoft.exchange"}),
        Command("New-CsPartnerApplication", {"Identity": "microsoft.exchange",
                                             "MetadataUrl": url(lab_server, estate.EXCHANGE_PATH),
                                             "ApplicationTrustLevel": "Full"}),
        Command("New-CsPartnerApplication", {"Identity": "microsoft.sharepoint", "MetadataUrl": sharepoint,
                                             "ApplicationTrustLevel": "Full"}),
    ])
    lab.close()
    assert [r.ok for r in results] == [True, True, True], [r.error for r in results]
    host = LabStore(lab_state).read()["hosts"]["atl-cs-001"]
    apps = {a["Identity"]: a for a in host["objects"]["PartnerApplication"]}
    assert apps["microsoft.exchange"]["ApplicationIdentifier"] == estate.EXCHANGE_ID
    assert apps["microsoft.sharepoint"]["ApplicationIdentifier"] == estate.SHAREPOINT_ID
    assert apps["microsoft.sharepoint"]["Realm"] == "litwareinc.com"
    assert apps["microsoft.sharepoint"]["MetadataUrl"] == sharepoint


def test_new_oauth_server_from_lab_metadata(lab_server: LabServer, lab_state: Path) -> None:
    lab = transport(lab_state, "fab-cs-001")
    sts = url(lab_server, estate.ACS_PATH)
    results = lab.invoke([
        Command("Remove-CsOAuthServer", {"Identity": "microsoft.sts"}),
        Command("New-CsOAuthServer", {"Identity": "microsoft.sts", "MetadataUrl": sts}),
    ])
    lab.close()
    assert [r.ok for r in results] == [True, True]
    servers = LabStore(lab_state).read()["hosts"]["fab-cs-001"]["objects"]["OAuthServer"]
    assert [s["MetadataUrl"] for s in servers] == [sts]


@pytest.mark.parametrize("status", ["invalid", "notfound", "unreachable"])
def test_broken_document_fails_the_cmdlet(lab_server: LabServer, lab_state: Path, status: str) -> None:
    set_document_status(lab_state, estate.SHAREPOINT_PATH, status)
    lab = transport(lab_state)
    result = lab.invoke([Command("New-CsPartnerApplication", {
        "Identity": "microsoft.sharepoint", "MetadataUrl": url(lab_server, estate.SHAREPOINT_PATH),
        "ApplicationTrustLevel": "Full"})])[0]
    lab.close()
    assert result.error == ("New-CsPartnerApplication : Cannot bind parameter 'MetadataUrl' to the target. "
                            f'Exception setting "MetadataUrl": "{METADATA_ERROR}"')


def test_concurrent_transports_do_not_lose_writes(lab_server: LabServer, lab_state: Path) -> None:
    def create(n: int) -> None:
        lab = transport(lab_state)
        lab.invoke([Command("New-CsPartnerApplication", {
            "Identity": f"partner-{n}", "ApplicationIdentifier": f"id-{n}", "ApplicationTrustLevel": "Full",
            "UseOAuthServer": True})])
        lab.close()

    threads = [threading.Thread(target=create, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    host = LabStore(lab_state).read()["hosts"]["atl-cs-001"]
    assert len(host["objects"]["PartnerApplication"]) == 2 + 8
    assert host["roundTrips"] == 8


def test_cli_serve_stops_cleanly_on_sigterm(lab_state: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "reconciler.lab.cli", "lab", "serve", "--state", str(lab_state), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        base = line.split(" on ", 1)[1].split(" ", 1)[0]
        assert httpx.get(base + "/healthz", timeout=5).text == "ok"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert process.stderr is not None
        assert process.stderr.read() == ""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
