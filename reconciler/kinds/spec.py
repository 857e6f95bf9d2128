"""What the planner knows about a kind: its fields and how they compare, what forces a replace, what comes first.

This is the core contract between the planner and the providers. Kinds managed with cmdlets derive it from
their declaration (reconciler.kinds.declaration); kinds that do not fit the cmdlet pattern (Office 365 over
Graph, Exchange's EnterprisePartnerApplication) write it themselves.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.kinds.certificates import CertificateLookup
from reconciler.model import JSONValue, Severity


@dataclass(frozen=True)
class FieldSpec:
    """How one field of a kind behaves.

    `replace_reason` set means the system cannot change this field in place: a difference makes
    the planner replace the object (Remove + New) and quote this reason.
    `metadata_url` marks a URL whose metadata document a create or update of this object downloads;
    plan checks those documents before anything is applied.
    `display` renders a value for people (for example a certificate as its thumbprint).
    """

    name: str
    replace_reason: str | None = None
    ignore_case: bool = False
    sensitive: bool = False
    metadata_url: bool = False
    display: Callable[[Any], Any] | None = None
    equal: Callable[[Any, Any, Mapping[str, Any]], bool] | None = None
    """Custom comparison (desired value, live value, all desired fields): for collections where the
    manifest's entries must be present but others may stay (unless it says the list is authoritative)."""
    control: bool = False
    """Not a property of the object: it changes how other fields compare (e.g. `...Authoritative`)."""
    merge: Callable[[Mapping[str, Any], Mapping[str, Any]], Any] | None = None
    """The value after an update (desired fields, live fields), for collections that are merged."""


@dataclass(frozen=True)
class DiagnoseContext:
    """What a kind's plan-time checks may depend on besides the records themselves."""

    now: datetime.datetime
    expiry_warning_days: int = 30


Finding = tuple[Severity, str, str]
"""(severity, field name, message) from a kind's plan-time checks."""


@dataclass(frozen=True)
class KindSpec:
    """A kind of object a provider owns.

    `singleton`: the object always exists (never created or removed), like CsOAuthConfiguration.
    `after`: kinds whose creates and updates must come before this kind's (and whose deletes after).
    `replace_when`: a rule beyond single fields, returning the reason a replace is needed
    (for example switching a partner application between parameter sets), or None.
    `prepare`: turns manifest fields into desired fields (for example reads a certificate file);
    raises FieldProblem naming the field.
    `schema`: JSON Schema of one manifest entry of this kind (the combined schema is built from these).
    """

    kind: str
    fields: Mapping[str, FieldSpec]
    schema: Mapping[str, Any]
    singleton: bool = False
    after: tuple[str, ...] = ()
    replace_when: Callable[[Mapping[str, JSONValue], Mapping[str, JSONValue]], str | None] | None = None
    prepare: Callable[[dict[str, JSONValue], Path], dict[str, JSONValue]] | None = None
    """The manifest's fields as the kind sends them (files read, defaults added), from the loader's own copy of the
    entry's fields (nothing else holds it: it may be returned as it is); raises FieldProblem."""
    description: str = ""
    diagnose: Callable[[Mapping[str, JSONValue], Mapping[str, JSONValue] | None, DiagnoseContext],
                       list[Finding]] | None = None
    """Plan-time checks of one declared resource against what is live (e.g. certificate validity)."""

    replacement: Callable[[Mapping[str, JSONValue], Mapping[str, JSONValue]], dict[str, JSONValue]] | None = None
    """The fields a replace's New creates from (desired, live): the manifest's, plus the live values of the fields
    it leaves out, so a replace never resets what the manifest does not manage. None: the manifest's fields only
    (kinds that are never replaced)."""
    exported: Callable[[Mapping[str, JSONValue]], dict[str, JSONValue]] | None = None
    """The manifest fields that describe a live record exactly (`reconcile export`); None: every live field the
    manifest schema has, empty ones left out."""
    stepwise: bool = False
    """The kind advances one step per cycle (e.g. create a certificate, then stage it once it is readable): after
    an apply that made a step, a re-read that finds the next step is progress, not a failure to converge."""
    exclusive: tuple[str, ...] = ()
    """Fields of which an object holds one at a time (e.g. a partner application's form): after an update
    that writes one, the others are gone."""
    prunable: bool = True
    """Whether `prune:` may name the kind. False where the system holds objects of the kind reconcile never
    enumerates (a tenant's applications: thousands, owned by others), so prune could not see what it would keep."""
    resolve: Callable[[Mapping[str, JSONValue], CertificateLookup], dict[str, JSONValue]] | None = None
    """Fields that take another target's certificates (`certificateOf: <target>`): turns them into concrete values
    from that target's live state, after discovery and before the planner compares (reconciler.references)."""
    references: Callable[[Mapping[str, JSONValue]], tuple[str, ...]] | None = None
    """The targets a resource's `certificateOf` fields name (its target is changed after them)."""
    refresh_note: str = ""
    follows_source: bool = True
    """Whether this kind changes anything from another target's certificates (and so is applied after that target);
    False for a side that only re-reads on its own schedule (no ordering: it would only make cycles)."""
    """How this kind's objects pick up a partner's new key when reconcile cannot make them (shown in the timeline)."""

    def field(self, name: str) -> FieldSpec:
        return self.fields.get(name) or FieldSpec(name)
