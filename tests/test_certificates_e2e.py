"""Partner applications declared with a certificate file: read locally, sent as raw data, shown as thumbprints."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from reconciler.lab import certs
from tests.e2e import Estate

MANIFEST = """\
apiVersion: reconciler/v1
targets:
  pool:
    provider: skype
    connection: {{transport: lab, host: atl-cs-001}}
resources:
  - target: pool
    kind: PartnerApplication
    identity: partner.cert
    applicationIdentifier: 6f2a9c1e-0b3d-4e5f-8a7b-9c0d1e2f3a4b
    certificateFile: {file}
    realm: litwareinc.com
    applicationTrustLevel: Application
"""


def test_certificate_file_creates_then_a_new_certificate_is_set_in_place(estate: Estate) -> None:
    first = certs.make_certificate("partner-one.litwareinc.com")
    second = certs.make_certificate("partner-two.litwareinc.com")
    (estate.root / "one.cer").write_bytes(first)  # DER, as the seed exports it
    pem = x509.load_der_x509_certificate(second).public_bytes(Encoding.PEM)
    (estate.root / "two.cer").write_bytes(pem)
    manifest = estate.write("m.yaml", MANIFEST.format(file="one.cer"))

    run = estate.reconcile("apply", manifest, "--auto-approve")
    assert run.code == 0, run.out + run.err
    assert f"certificate {certs.thumbprint(first)}" in run.out
    assert "MII" not in run.out  # never the base64 certificate itself
    app = estate.app("atl-cs-001", "partner.cert")
    assert app is not None and certs.from_b64(app["CertificateRawData"]) == first

    manifest.write_text(MANIFEST.format(file="two.cer"), encoding="utf-8")
    run = estate.reconcile("plan", manifest, "--detailed-exitcode")
    assert run.code == 2
    assert "will be updated in place" in run.out
    assert f"certificate {certs.thumbprint(first)}\" -> \"certificate {certs.thumbprint(second)}" in run.out
    assert f"> Set-CsPartnerApplication -Identity 'partner.cert' -CertificateRawData " \
           f"'certificate {certs.thumbprint(second)}'" in run.out
    assert estate.reconcile("apply", manifest, "--auto-approve").code == 0
    app = estate.app("atl-cs-001", "partner.cert")
    assert app is not None and certs.from_b64(app["CertificateRawData"]) == second
    assert estate.reconcile("plan", manifest, "--detailed-exitcode").code == 0
