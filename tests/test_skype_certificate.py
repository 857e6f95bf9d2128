"""OAuthCertificate: reading Get-CsCertificate during a roll, and the commands a change makes (unit)."""

from __future__ import annotations

import datetime

from reconciler.kinds import skype_certificate as kind
from reconciler.kinds.spec import DiagnoseContext
from reconciler.kinds.syntax import CmdletSyntax

NOW = datetime.datetime(2026, 6, 1, tzinfo=datetime.UTC)
OLD, NEW = "A" * 40, "B" * 40
STORE = [{"Thumbprint": OLD, "Subject": "CN=pool", "NotBefore": "2025-01-01T00:00:00Z",
          "NotAfter": "2027-01-01T00:00:00Z", "HasPrivateKey": True},
         {"Thumbprint": NEW, "Subject": "CN=pool", "NotBefore": "2026-01-01T00:00:00Z",
          "NotAfter": "2028-01-01T00:00:00Z", "HasPrivateKey": True}]


def test_a_roll_in_progress_reads_as_current_and_next() -> None:
    refs = [{"Thumbprint": OLD, "EffectiveDate": "2025-01-01T00:00:00Z", "Use": "OAuthTokenIssuer"},
            {"Thumbprint": NEW, "EffectiveDate": "2026-07-01T00:00:00Z", "PreviousThumbprint": OLD}]
    live = kind.parse(refs, STORE, NOW)
    assert (live["thumbprint"], live["nextThumbprint"], live["previousThumbprint"]) == (OLD, NEW, None)
    after = kind.parse(refs, STORE, datetime.datetime(2026, 8, 1, tzinfo=datetime.UTC))
    assert (after["thumbprint"], after["nextThumbprint"], after["previousThumbprint"]) == (NEW, f"current:{NEW}", OLD)
    assert after["removePrevious"] is False


def test_declared_roll_compares_equal_once_it_has_taken_effect() -> None:
    spec = kind.spec()
    desired = {"nextThumbprint": NEW, "effectiveDate": "2026-07-01T00:00:00Z"}
    for name in desired:
        assert spec.field(name).equal is not None
        assert spec.field(name).equal(desired[name], f"current:{NEW}", desired)
        assert not spec.field(name).equal(desired[name], f"current:{OLD}", desired)


def test_commands_fit_the_documented_syntax() -> None:
    syntax: dict[str, CmdletSyntax] = {c.name: c for c in kind.CMDLETS}
    for command in kind.DISCOVERY:
        syntax[command.cmdlet].bind(command.parameters)
    syntax["Set-CsCertificate"].bind({"Type": "OAuthTokenIssuer", "Thumbprint": NEW, "Roll": True,
                                      "EffectiveDate": "2026-07-01T00:00:00Z"})
    syntax["Remove-CsCertificate"].bind({"Type": "OAuthTokenIssuer", "Previous": True})


def test_diagnose_names_the_certificate() -> None:
    live = kind.parse([{"Thumbprint": OLD, "EffectiveDate": "2025-01-01T00:00:00Z"}], STORE, NOW)
    context = DiagnoseContext(NOW)
    assert kind.diagnose({"nextThumbprint": NEW, "effectiveDate": "2026-07-01T00:00:00Z"}, live, context) == []
    late = kind.diagnose({"nextThumbprint": NEW, "effectiveDate": "2028-02-01T00:00:00Z"}, live, context)
    assert late and NEW in late[0][2] and "before it would take effect" in late[0][2]
