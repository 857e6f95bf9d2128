"""`reconcile show PLAN.json` and `plan --format markdown`, end to end against the lab."""

from __future__ import annotations

import json
import re

from reconciler.plan import Plan
from reconciler.render.json_plan import plan_to_json
from reconciler.render.markdown import render_markdown
from tests.e2e import CROSS_PREMISES, ON_PREMISES, Estate
from tests.test_rendering import KIND, SECRET, plan_with_secret


def test_show_renders_a_saved_plan_as_plan_printed_it(estate: Estate) -> None:
    planned = estate.reconcile("plan", ON_PREMISES, "--out", "plan.json")
    assert planned.code == 0, planned.err
    shown = estate.run("show", "plan.json")
    assert shown.code == 0, shown.err
    assert shown.out.startswith(f"Saved plan of {ON_PREMISES} (sha256 ")
    body = shown.out.split("\n", 2)[2]
    # the same symbols, addresses, reasons, commands, handlers and summary as the plan printed
    for line in planned.out.splitlines():
        if line.startswith("  # ") or line.startswith("    > ") or line.startswith("Plan:"):
            assert line in body, line
    assert "Plan: " in body and "handler litware-exchange.handler.iisreset will run once" in body
    # --json gives the document back as saved
    as_json = estate.run("show", "plan.json", "--json")
    assert as_json.code == 0
    assert json.loads(as_json.out) == json.loads((estate.root / "plan.json").read_text(encoding="utf-8"))
    # a saved plan still applies after being shown (show changes nothing)
    assert estate.run("apply", "plan.json").code == 0


def test_show_of_a_plan_with_no_changes(estate: Estate) -> None:
    assert estate.reconcile("apply", ON_PREMISES, "--auto-approve").code == 0
    assert estate.reconcile("plan", ON_PREMISES, "--out", "none.json").code == 0
    shown = estate.run("show", "none.json")
    assert shown.code == 0 and "No changes. The live state matches the manifest" in shown.out


def test_show_refuses_what_is_not_a_plan(estate: Estate) -> None:
    cases = {
        "manifest.yaml": (ON_PREMISES.read_text(encoding="utf-8"), "it is a YAML manifest"),
        "other.json": ('{"hello": "world"}', "JSON without format_version, manifest, resource_changes"),
        "text.txt": ("just words", "it is not JSON"),
        "future.json": ('{"format_version": "9.0", "manifest": {}, "resource_changes": []}',
                        "plan format 9.0 is not supported"),
    }
    for name, (text, message) in cases.items():
        estate.write(name, text)
        run = estate.run("show", name)
        assert run.code == 1 and message in run.err and run.out == "", (name, run.err)
    (estate.root / "binary.bin").write_bytes(b"\xff\xfe\x00\x01")
    assert "not UTF-8 text" in estate.run("show", "binary.bin").err
    missing = estate.run("show", "nowhere.json")
    assert missing.code == 1 and "cannot read nowhere.json" in missing.err
    damaged = estate.write("damaged.json", '{"format_version": "1.0", "manifest": {"path": "m"}, '
                                           '"resource_changes": [{"address": "x"}]}')
    run = estate.run("show", str(damaged))
    assert run.code == 1 and "is damaged" in run.err


def test_plan_markdown_is_collapsible_per_target_with_commands_and_reasons(estate: Estate) -> None:
    run = estate.reconcile("plan", ON_PREMISES, "--format", "markdown")
    assert run.code == 0, run.err
    text = run.out
    assert text.startswith(f"### reconcile plan: `{ON_PREMISES}`\n\n**Plan: ")
    blocks = re.findall(r"<details><summary><b>([^<]+)</b>: ([^<]+)</summary>\n(.*?)</details>", text, re.S)
    targets = {name for name, _, _ in blocks}
    assert targets == {"litware-pool", "litware-exchange"}
    pool = next(body for name, _, body in blocks if name == "litware-pool")
    assert "#### `+` `litware-pool.PartnerApplication.microsoft.sharepoint`\n\nCreate: not found on the target" in pool
    assert "```powershell\nNew-CsPartnerApplication -Identity 'microsoft.sharepoint'" in pool
    assert "#### `-/+` `litware-pool.PartnerApplication.microsoft.exchange`\n\nReplace: " in pool
    assert "```diff\n" in pool and "- applicationIdentifier = 00000005-0000-0ff1-ce00-000000000000\n" \
           "+ applicationIdentifier = 00000002-0000-0ff1-ce00-000000000000\n" in pool
    summary = dict((name, line) for name, line, _ in blocks)
    assert summary["litware-pool"] == "1 to add, 1 to change, 1 to replace, 1 to remove"
    assert summary["litware-exchange"] == "1 to add, 1 handler"
    exchange = next(body for name, _, body in blocks if name == "litware-exchange")
    assert "#### Handler `litware-exchange.handler.iisreset`" in exchange and "iisreset atl-exchange-001" in exchange
    # every <details> is closed, every fence is closed
    assert text.count("<details>") == text.count("</details>") == 2
    assert text.count("```") % 2 == 0
    # the same plan as JSON: each change's address is in the Markdown
    document = json.loads(estate.reconcile("plan", ON_PREMISES, "--json").out)
    for change in document["resource_changes"]:
        assert f"`{change['address']}`" in text
    # and show renders a saved plan as the same Markdown
    assert estate.reconcile("plan", ON_PREMISES, "--out", "p.json", "--format", "markdown").code == 0
    assert estate.run("show", "p.json", "--format", "markdown").out == text


def test_plan_markdown_after_apply_and_with_diagnostics(estate: Estate) -> None:
    assert estate.reconcile("apply", ON_PREMISES, "--auto-approve").code == 0
    run = estate.reconcile("plan", ON_PREMISES, "--format", "markdown")
    assert "**No changes.** The live state matches the manifest" in run.out
    assert "<details>" not in run.out
    assert "No changes on `litware-pool`, `litware-exchange`." in run.out
    estate.lab("url", "--status", "unreachable", "/atl-exchange-001.litwareinc.com/autodiscover/metadata/json/1")
    estate.lab("set", "atl-cs-001", "PartnerApplication", "microsoft.exchange", "ApplicationTrustLevel=User")
    run = estate.reconcile("plan", ON_PREMISES, "--format", "markdown")
    assert run.code == 0, run.out + run.err
    assert "#### Diagnostics\n\n- **warning**: `" in run.out and "cannot check the link to" in run.out
    assert "<details><summary><b>litware-pool</b>" in run.out


def test_plan_json_and_format_agree_and_contradictions_are_refused(estate: Estate) -> None:
    a = json.loads(estate.reconcile("plan", ON_PREMISES, "--json").out)
    b = json.loads(estate.reconcile("plan", ON_PREMISES, "--format", "json").out)
    assert [c["address"] for c in a["resource_changes"]] == [c["address"] for c in b["resource_changes"]]
    run = estate.reconcile("plan", ON_PREMISES, "--json", "--format", "markdown")
    assert run.code == 1 and "--json and --format markdown" in run.err


def test_markdown_masks_secrets_and_escapes_what_it_shows() -> None:
    document = plan_to_json(plan_with_secret(), lambda c: KIND)
    text = render_markdown(document)
    assert SECRET not in text and "(sensitive value)" in text
    hostile = plan_with_secret()
    change = hostile.changes[0]
    evil = "</summary></details><script>alert(1)</script> ``` `"
    import dataclasses
    hostile = dataclasses.replace(hostile, targets=("t",), changes=(dataclasses.replace(change, reason=evil),))
    text = render_markdown(plan_to_json(hostile, lambda c: KIND))
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert text.count("<details>") == text.count("</details>") == 1


def test_markdown_is_cut_before_a_comment_is_too_long() -> None:
    base = plan_with_secret()
    import dataclasses
    changes = tuple(dataclasses.replace(base.changes[0], key=dataclasses.replace(base.changes[0].key, target=f"t{i}"))
                    for i in range(40))
    plan = Plan("m.yaml", "h", tuple(f"t{i}" for i in range(40)), {}, changes)
    text = render_markdown(plan_to_json(plan, lambda c: KIND), max_chars=3000)
    assert len(text) < 3600 and "Not shown here (the comment would be too long): " in text


def test_cross_premises_markdown_shows_graph_requests_without_the_client_secret(estate: Estate) -> None:
    import shutil

    from reconciler.lab.estate import LAB_CLIENT_SECRET
    shutil.copytree(CROSS_PREMISES.parent / "certs", estate.root / "certs", dirs_exist_ok=True)
    manifest = estate.write("cross.yaml", CROSS_PREMISES.read_text(encoding="utf-8"))
    run = estate.reconcile("plan", manifest, "--format", "markdown")
    assert run.code == 0, run.err
    assert "PATCH /servicePrincipals" in run.out
    assert LAB_CLIENT_SECRET not in run.out
