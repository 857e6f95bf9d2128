"""Rendering never leaks: sensitive values are masked in commands, text plans and JSON plans."""

from __future__ import annotations

import json

from reconciler.changes import Action, ActionReason, Change
from reconciler.kinds.spec import FieldSpec, KindSpec
from reconciler.model import ResourceKey
from reconciler.plan import Plan, fingerprint_differences
from reconciler.render.json_plan import plan_to_json
from reconciler.render.text import render_plan
from reconciler.transports.base import MASK, Command

SECRET = "s3cr3t-value-that-must-not-leak"
KIND = KindSpec("Credential", fields={"secret": FieldSpec("secret", sensitive=True)}, schema={})


def plan_with_secret() -> Plan:
    change = Change(
        key=ResourceKey("t", "Credential", "c1"), actions=(Action.UPDATE,), action_reason=ActionReason.DRIFT,
        reason="differs", before={"secret": "old-" + SECRET, "name": "a"}, after={"secret": SECRET, "name": "a"},
        changed=("secret",),
        commands=(Command("Set-Credential", {"Identity": "c1", "Secret": SECRET}, sensitive=frozenset({"Secret"})),))
    return Plan("m.yaml", "h", ("t",), {"t": {"*": "x"}}, (change,))


def test_text_plan_masks_sensitive_fields_and_parameters() -> None:
    text = render_plan(plan_with_secret(), lambda c: KIND)
    assert SECRET not in text
    assert MASK in text
    assert "-Secret '(sensitive value)'" in text


def test_json_plan_masks_and_marks_sensitive_fields() -> None:
    doc = plan_to_json(plan_with_secret(), lambda c: KIND)
    assert SECRET not in json.dumps(doc)
    change = doc["resource_changes"][0]
    assert change["change"]["after_sensitive"] == {"secret": True}
    assert change["change"]["after"]["secret"] == MASK
    assert change["commands"][0]["parameters"]["Secret"] == MASK


def test_command_display_quotes_values_as_literals() -> None:
    command = Command("New-CsPartnerApplication", {"Identity": "x'; Remove-Item C:\\ -Recurse; '", "Enabled": False,
                                                   "UseOAuthServer": True, "AcceptSecurityIdentifierInformation": True},
                      switches=frozenset({"UseOAuthServer"}))
    shown = command.display()
    # A switch shows bare; a Boolean parameter always shows its value (-Enabled alone is not valid for a Boolean)
    assert shown == ("New-CsPartnerApplication -Identity 'x''; Remove-Item C:\\ -Recurse; ''' -Enabled:$false "
                     "-UseOAuthServer -AcceptSecurityIdentifierInformation:$true")
    # the command itself stays data: the value is passed as-is, never as script text
    assert command.parameters["Identity"] == "x'; Remove-Item C:\\ -Recurse; '"


def test_fingerprint_differences_name_changed_added_and_removed_records() -> None:
    saved = {"*": "1", "a": "x", "b": "y"}
    current = {"*": "2", "a": "x", "b": "z", "c": "w"}
    assert fingerprint_differences(saved, current) == ["b", "c"]
    assert fingerprint_differences(saved, {"*": "3", "a": "x"}) == ["b"]
