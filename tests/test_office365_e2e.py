"""Seed 004's Office 365 half through the CLI, the Graph transport and the lab's Graph endpoint."""

from __future__ import annotations

import copy
import datetime
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from reconciler.lab import certs, graph
from reconciler.lab.estate import LAB_CLIENT_SECRET, LAB_READONLY_CLIENT_ID, LAB_READONLY_SECRET, LAB_TENANT_ID
from reconciler.lab.state import LabStore
from reconciler.providers.office365 import key_id_for
from tests.e2e import CROSS_PREMISES, Estate

SKYPE = "00000004-0000-0ff1-ce00-000000000000"
EXCHANGE = "00000002-0000-0ff1-ce00-000000000000"
POOL_SPN = f"{SKYPE}/lync.fabrikam.com"


def cross(estate: Estate, *, credentials: str = "      - certificateFile: certs/fabrikam-oauth.cer\n",
          extra: str = "") -> Path:
    """The shipped seed 004 manifest in the test's directory, with the credentials list swapped."""
    shutil.copytree(CROSS_PREMISES.parent / "certs", estate.root / "certs", dirs_exist_ok=True)
    text = CROSS_PREMISES.read_text(encoding="utf-8")
    text = text.replace("      - certificateFile: certs/fabrikam-oauth.cer\n", credentials + extra)
    return estate.write("cross.yaml", text)


def principals(estate: Estate) -> dict[str, dict[str, object]]:
    tenant = LabStore(estate.state).read()["tenants"][LAB_TENANT_ID]
    return {sp["appId"]: sp for sp in tenant["servicePrincipals"]}


def thumbprints(estate: Estate, app_id: str) -> set[str]:
    keys = principals(estate)[app_id]["keyCredentials"]
    assert isinstance(keys, list)
    return {certs.thumbprint(certs.from_b64(k["key"])) for k in keys}


def make_cert(path: Path, cn: str, days_from: int, days_to: int) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now + datetime.timedelta(days=days_from))
            .not_valid_after(now + datetime.timedelta(days=days_to)).sign(key, hashes.SHA256()))
    der = cert.public_bytes(Encoding.DER)
    path.write_bytes(der)
    return certs.thumbprint(der)


ONPREM = certs.thumbprint((CROSS_PREMISES.parent / "certs" / "fabrikam-oauth.cer").read_bytes())


def test_fresh_tenant_gets_keys_spn_and_enabled_exchange_then_nothing_to_do(estate: Estate) -> None:
    manifest = cross(estate)
    assert principals(estate)[EXCHANGE]["accountEnabled"] is False
    run = estate.reconcile("apply", manifest, "--auto-approve")
    assert run.code == 0, run.out + run.err
    assert "Re-read fabrikam-tenant: converged" in run.out
    sps = principals(estate)
    assert sps[EXCHANGE]["accountEnabled"] is True
    assert POOL_SPN in sps[SKYPE]["servicePrincipalNames"]  # type: ignore[operator]
    assert thumbprints(estate, SKYPE) == thumbprints(estate, EXCHANGE) == {ONPREM}
    key = sps[SKYPE]["keyCredentials"][0]  # type: ignore[index]
    assert key["startDateTime"] == "2026-01-01T00:00:00Z" and key["endDateTime"] == "2036-01-01T00:00:00Z"
    assert key["type"] == "AsymmetricX509Cert" and key["usage"] == "Verify"
    assert estate.reconcile("plan", manifest, "--detailed-exitcode").code == 0


def test_credential_and_spn_already_there_only_enable_remains(estate: Estate) -> None:
    manifest = cross(estate)
    for app in (SKYPE, EXCHANGE):
        assert estate.lab("graph", "add-key", app, str(estate.root / "certs" / "fabrikam-oauth.cer")).code == 0
    spns = ",".join([*principals(estate)[SKYPE]["servicePrincipalNames"], POOL_SPN])  # type: ignore[misc]
    assert estate.lab("graph", "set", SKYPE, f"servicePrincipalNames={spns}").code == 0
    run = estate.reconcile("plan", manifest)
    assert "fabrikam-tenant.ServicePrincipal.00000004-0000-0ff1-ce00-000000000000" not in run.out
    assert "~ accountEnabled = false -> true" in run.out
    assert "keyCredentials" not in run.out


def test_a_key_added_behind_our_back_is_kept_by_every_patch(estate: Estate) -> None:
    other = make_cert(estate.root / "other.cer", "someone-else", -1, 100)
    assert estate.lab("graph", "add-key", SKYPE, str(estate.root / "other.cer")).code == 0
    assert estate.reconcile("apply", cross(estate), "--auto-approve").code == 0
    assert thumbprints(estate, SKYPE) == {other, ONPREM}


def test_rotation_keeps_both_until_the_old_one_is_dropped_from_an_authoritative_list(estate: Estate) -> None:
    first = cross(estate)
    new = make_cert(estate.root / "certs" / "next.cer", "fab-cs-001.fabrikam.com", -1, 400)
    assert estate.reconcile("apply", first, "--auto-approve").code == 0
    both = "      - certificateFile: certs/fabrikam-oauth.cer\n      - certificateFile: certs/next.cer\n"
    assert estate.reconcile("apply", cross(estate, credentials=both), "--auto-approve").code == 0
    assert thumbprints(estate, SKYPE) == {ONPREM, new}
    only_new = "      - certificateFile: certs/next.cer\n"
    assert estate.reconcile("apply", cross(estate, credentials=only_new), "--auto-approve").code == 0
    assert thumbprints(estate, SKYPE) == {ONPREM, new}  # not authoritative: nothing is dropped
    run = estate.reconcile("apply", cross(estate, credentials=only_new + "    credentialsAuthoritative: true\n"),
                           "--auto-approve")
    assert run.code == 0, run.out
    assert f'- "{ONPREM}' in run.out
    assert thumbprints(estate, SKYPE) == {new}


def test_expired_certificate_is_refused_at_plan_time_and_nothing_changes(estate: Estate) -> None:
    make_cert(estate.root / "old.cer", "old", -400, -1)
    manifest = cross(estate, credentials="      - certificateFile: old.cer\n")
    before = principals(estate)
    run = estate.reconcile("plan", manifest)
    assert run.code == 1
    assert "error:" in run.out and "old.cer expired (valid" in run.out and "refusing to upload it" in run.out
    assert estate.reconcile("apply", manifest, "--auto-approve").code == 1
    assert principals(estate) == before


def test_certificate_expiring_soon_is_a_warning(estate: Estate) -> None:
    make_cert(estate.root / "soon.cer", "soon", -10, 12)
    run = estate.reconcile("plan", cross(estate, credentials="      - certificateFile: soon.cer\n"))
    assert run.code == 0
    assert "warning:" in run.out and "soon.cer expires in 11 days" in run.out


def test_throttling_is_retried_after_retry_after(estate: Estate) -> None:
    assert estate.lab("graph", "fault", "--status", "429", "--retry-after", "1", "--times", "1").code == 0
    assert estate.lab("graph", "fault", "--status", "503", "--retry-after", "1", "--times", "1", "--inner",
                      "--method", "PATCH").code == 0
    run = estate.reconcile("apply", cross(estate), "--auto-approve")
    assert run.code == 0, run.out + run.err
    assert thumbprints(estate, EXCHANGE) == {ONPREM}


def test_a_read_only_client_gets_a_403_naming_the_permission(estate: Estate, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECONCILE_GRAPH_CLIENT_SECRET", LAB_READONLY_SECRET)
    text = cross(estate).read_text(encoding="utf-8").replace("5e0c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b",
                                                             LAB_READONLY_CLIENT_ID)
    run = estate.reconcile("apply", estate.write("ro.yaml", text), "--auto-approve")
    assert run.code == 1
    assert "403" in run.out and "Application.ReadWrite.All" in run.out


def test_a_wrong_secret_is_one_clear_line_without_the_secret(estate: Estate, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECONCILE_GRAPH_CLIENT_SECRET", "wrong-secret-value-42")
    run = estate.reconcile("plan", cross(estate))
    assert run.code == 1
    assert "AADSTS7000215" in run.err and "wrong-secret-value-42" not in run.err + run.out


def test_no_secret_token_or_key_material_anywhere(estate: Estate) -> None:
    """No secret or token anywhere. The certificate (public) appears in `plan --json` only, inside the PATCH
    bodies it shows whole; text output, logs, the journal and the run store show its thumbprint."""
    manifest = cross(estate)
    key_b64 = certs.b64((estate.root / "certs" / "fabrikam-oauth.cer").read_bytes())
    outputs = [estate.reconcile("plan", manifest, "--json"), estate.reconcile("apply", manifest, "--auto-approve"),
               estate.reconcile("drift", manifest, "--log-format", "json"), estate.run("history", "--json")]
    texts = [r.out + r.err for r in outputs]
    for name in ("journal.jsonl", "runs.sqlite3"):
        texts.append((estate.root / ".reconciler" / name).read_bytes().decode("utf-8", "replace"))
    plan = json.loads(outputs[0].out)
    assert any(c["kind"] == "ServicePrincipal" for c in plan["resource_changes"])
    for text in texts:
        assert LAB_CLIENT_SECRET not in text
        assert "Bearer " not in text and "access_token" not in text
    bodies = [c["parameters"]["body"] for change in plan["resource_changes"] for c in change["commands"]
              if c["cmdlet"] == "PATCH"]
    assert [k["key"] for body in bodies for k in body.get("keyCredentials", [])] == [key_b64, key_b64]
    without_bodies = copy.deepcopy(plan)
    for change in without_bodies["resource_changes"]:
        for command in change["commands"]:
            command["parameters"].pop("body", None)
    for text in [json.dumps(without_bodies), *texts[1:]]:
        assert key_b64[:60] not in text
    assert ONPREM in texts[1]  # apply's text plan: the thumbprint


def test_plan_json_shows_the_exact_body_apply_sends_for_a_key_rotation(estate: Estate,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A rotation: the key in place is re-sent as {key, type, usage}, its successor added as
    {displayName, keyId, type, usage, key} (as Microsoft's scripts do); what `plan --json` shows is, after
    JSON parsing, exactly what the lab's Graph receives on apply."""
    assert estate.reconcile("apply", cross(estate), "--auto-approve").code == 0
    stored_ids = {k["keyId"] for k in principals(estate)[SKYPE]["keyCredentials"]}  # type: ignore[union-attr]
    new = make_cert(estate.root / "certs" / "next.cer", "fab-cs-001.fabrikam.com", -1, 400)
    both = cross(estate, credentials="      - certificateFile: certs/fabrikam-oauth.cer\n"
                                     "      - certificateFile: certs/next.cer\n")
    run = estate.reconcile("plan", both, "--json")
    assert run.code == 0, run.err
    planned = {change["identity"]: command["parameters"]["body"]
               for change in json.loads(run.out)["resource_changes"] for command in change["commands"]
               if command["cmdlet"] == "PATCH"}
    onprem_b64 = certs.b64((estate.root / "certs" / "fabrikam-oauth.cer").read_bytes())
    new_b64 = certs.b64((estate.root / "certs" / "next.cer").read_bytes())
    assert planned[SKYPE] == {"keyCredentials": [
        {"key": onprem_b64, "type": "AsymmetricX509Cert", "usage": "Verify"},
        {"displayName": "CN=fab-cs-001.fabrikam.com", "keyId": key_id_for(SKYPE, new), "type": "AsymmetricX509Cert",
         "usage": "Verify", "key": new_b64}]}

    received: list[tuple[str, Any]] = []
    real_patch = graph._patch

    def recording(record: dict[str, Any], sp: dict[str, Any], body: Any) -> None:
        received.append((sp["appId"], copy.deepcopy(body)))
        real_patch(record, sp, body)

    monkeypatch.setattr(graph, "_patch", recording)
    assert estate.reconcile("apply", both, "--auto-approve").code == 0
    assert dict(received) == planned and len(received) == len(planned) == 2
    stored = {k["customKeyIdentifier"]: k for k in principals(estate)[SKYPE]["keyCredentials"]}  # type: ignore[union-attr]
    assert set(stored) == {ONPREM, new}  # customKeyIdentifier left to its default: the thumbprint
    assert stored[new]["keyId"] == key_id_for(SKYPE, new) and stored[ONPREM]["keyId"] in stored_ids
    assert estate.reconcile("plan", both, "--detailed-exitcode").code == 0


def test_a_saved_plan_is_refused_when_a_certificate_file_it_read_was_replaced(estate: Estate) -> None:
    """`plan --out`, then the .cer the manifest names is swapped for another certificate: apply must not upload
    a certificate nobody saw in the plan."""
    manifest = cross(estate)
    assert estate.reconcile("plan", manifest, "--out", "plan.json").code == 0
    other = make_cert(estate.root / "certs" / "fabrikam-oauth.cer", "CN=someone-else", -1, 300)
    before = principals(estate)
    run = estate.run("apply", "--var", f"lab={estate.url}", "plan.json")
    assert run.code == 1
    assert "the saved plan is not what apply would run now" in run.err
    assert "fabrikam-tenant.ServicePrincipal.00000004-0000-0ff1-ce00-000000000000: its commands differ" in run.err
    assert principals(estate) == before
    assert other not in thumbprints(estate, SKYPE)


def test_a_hand_edited_command_in_a_saved_plan_is_refused(estate: Estate) -> None:
    manifest = cross(estate)
    assert estate.reconcile("plan", manifest, "--out", "plan.json").code == 0
    saved = json.loads((estate.root / "plan.json").read_text(encoding="utf-8"))
    change = next(c for c in saved["resource_changes"] if c["kind"] == "PartnerApplication")
    change["commands"][0]["parameters"]["ApplicationTrustLevel"] = "User"
    (estate.root / "plan.json").write_text(json.dumps(saved), encoding="utf-8")
    run = estate.run("apply", "--var", f"lab={estate.url}", "plan.json")
    assert run.code == 1 and "fabrikam-pool.PartnerApplication.microsoft.exchange: its commands differ" in run.err
