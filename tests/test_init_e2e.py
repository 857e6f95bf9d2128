"""`reconcile init`: a commented starter manifest per estate type, valid as written, and real enough to plan."""

from __future__ import annotations

import re

import pytest

from reconciler.starters import KINDS
from tests.e2e import Estate


@pytest.mark.parametrize("kind", KINDS)
def test_each_starter_is_valid_and_commented(estate: Estate, kind: str) -> None:
    out = estate.root / f"{kind}.yaml"
    run = estate.run("init", "--type", kind, "--out", str(out))
    assert run.code == 0, run.err
    text = out.read_text(encoding="utf-8")
    assert text.startswith("# Written by `reconcile init") and f"reconcile validate {out}" in text
    assert sum(1 for line in text.splitlines() if "#" in line) >= 10
    validated = estate.run("validate", str(out))
    assert validated.code == 0, validated.err


def test_init_never_overwrites_unless_forced(estate: Estate) -> None:
    out = estate.write("reconcile.yaml", "mine\n")
    run = estate.run("init")  # default: on-premises into reconcile.yaml
    assert run.code == 1 and "exists; nothing was written (--force overwrites it)" in run.err
    assert out.read_text(encoding="utf-8") == "mine\n"
    assert estate.run("init", "--force").code == 0 and "--type on-premises" in out.read_text(encoding="utf-8")
    assert estate.run("init", "--type", "everything").code == 1  # a usage error: exit 1, never 2


def test_the_on_premises_starter_plans_against_the_lab(estate: Estate) -> None:
    """Pointed at the lab's hosts (the only edit an admin makes is the variables and connections), the starter
    finds the lab's seed drift and applies it."""
    out = estate.root / "reconcile.yaml"
    assert estate.run("init", "--out", str(out)).code == 0
    text = out.read_text(encoding="utf-8")
    text = text.replace("https://mail.contoso.com", f"{estate.url}/atl-exchange-001.litwareinc.com")
    text = text.replace("https://pool01.contoso.com", f"{estate.url}/atl-cs-001.litwareinc.com")
    text = re.sub(r"transport: pwsh[^\n]*\n\s*modules: \[SkypeForBusiness\][^\n]*\n",
                  "transport: lab\n      host: atl-cs-001\n", text)
    text = re.sub(r"transport: pwsh[^\n]*\n\s*modules: \[Microsoft.Exchange[^\n]*\n",
                  "transport: lab\n      host: atl-exchange-001\n", text)
    out.write_text(text.replace("exchangeServer: ex01", "exchangeServer: atl-exchange-001"), encoding="utf-8")
    plan = estate.run("plan", "--detailed-exitcode", str(out))
    assert plan.code == 2, plan.out + plan.err
    assert "pool.PartnerApplication.microsoft.exchange" in plan.out
    assert estate.run("apply", "--auto-approve", str(out)).code == 0
    assert estate.run("plan", "--detailed-exitcode", str(out)).code == 0
