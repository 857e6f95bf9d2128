"""Skype for Business Server / Lync Server 2013: S2S OAuth objects managed with the Cs* cmdlets.

Kinds (declared once, from Microsoft's documented syntax and recorded output, in reconciler.kinds.skype):
OAuthConfiguration (the global singleton), OAuthServer, PartnerApplication. This module adds what is not
a kind: discovery in one round trip, the trust edges and service identity for the trust graph, and the
Test-CsExStorageConnectivity check.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from reconciler.changes import Change
from reconciler.commands import Command, CommandResult, Transport
from reconciler.errors import DiscoveryError, ReferenceProblem
from reconciler.kinds import skype as declared
from reconciler.kinds import skype_certificate as certificate
from reconciler.kinds.certificates import PublishedCertificate
from reconciler.kinds.declaration import CmdletKind
from reconciler.kinds.schema import BOOLEAN
from reconciler.kinds.spec import KindSpec
from reconciler.model import (
    DesiredResource,
    Ensure,
    LiveResource,
    LiveState,
    ResourceKey,
    TargetSpec,
)
from reconciler.providers.base import CheckSpec, Discovery, ServiceIdentity, TrustEdge, discover_by_steps

GLOBAL = "Global"
DECLARED: Mapping[str, CmdletKind] = {k.kind: k for k in declared.KINDS}
_DISCOVERY = tuple(k.discovery() for k in declared.KINDS)


def _ex_storage_commands(args: Mapping[str, Any]) -> tuple[Command, ...]:
    params: dict[str, Any] = {"SipUri": args["sipUri"]}
    if args.get("folder"):
        params["Folder"] = args["folder"]
    if args.get("deleteItem"):
        params["DeleteItem"] = True
    return (Command("Test-CsExStorageConnectivity", params, switches=frozenset({"DeleteItem"})),)


_EX_STORAGE = CheckSpec(
    name="ExStorageConnectivity",
    description="Test-CsExStorageConnectivity: the Storage Service writes an item to the user's Exchange "
                "mailbox over server-to-server OAuth; it works only when both directions of the trust do.",
    schema={
        "type": "object",
        "required": ["sipUri"],
        "properties": {
            "sipUri": {"type": "string", "pattern": r"^sip:[^@\s]+@[^@\s]+$",
                       "errorMessage": "is not a SIP URI (sip:user@domain)"},
            "folder": {"enum": ["ConversationHistory", "Inbox", "Dumpster"]},
            "deleteItem": BOOLEAN,
        },
    },
    commands=_ex_storage_commands,
)


SKYPE_SERVICE = "00000004-0000-0ff1-ce00-000000000000"
_TRUSTING = frozenset({"PartnerApplication", "OAuthServer"})
"""The kinds that trust another system (the trust graph's edges)."""


class SkypeProvider:
    """Skype for Business / Lync Server provider."""

    name = "skype"
    kinds: Mapping[str, KindSpec] = {**{k.kind: k.spec() for k in declared.KINDS}, certificate.KIND: certificate.spec()}
    checks: Mapping[str, CheckSpec] = {_EX_STORAGE.name: _EX_STORAGE}
    syntax = (*(c for k in declared.KINDS for c in k.cmdlets), *declared.CHECKS, *certificate.CMDLETS)
    """Every cmdlet this provider may run, as documented: transports allow exactly these."""

    def identity(self, target: TargetSpec, resources: Sequence[DesiredResource]) -> ServiceIdentity:
        config = next((r.fields for r in resources if r.key.kind == "OAuthConfiguration"), {})
        # The pool's well-known service name unless the manifest says otherwise: what its metadata document names.
        return ServiceIdentity(target.name, "Skype for Business", _text(config.get("serviceName")) or SKYPE_SERVICE,
                               _text(config.get("realm")))

    def trust_edges(self, target: TargetSpec, resources: Sequence[DesiredResource]) -> list[TrustEdge]:
        edges = []
        for r in resources:
            key = r.key
            if key.kind not in _TRUSTING or r.ensure is not Ensure.PRESENT:
                continue
            fields, location = r.fields, r.location
            url = _text(fields.get("metadataUrl"))
            line = r.field_lines.get("metadataUrl" if url else "applicationIdentifier", location.line)
            via = f"{key.kind} {key.identity} (metadataUrl)" if url else \
                f"{key.kind} {key.identity} (applicationIdentifier)"
            edges.append(TrustEdge(target.name, key.address, via, url, _text(fields.get("applicationIdentifier")),
                                   f"{location.file}:{line}"))
        return edges

    def discover(self, target: TargetSpec, transport: Transport, wanted: Sequence[ResourceKey] = ()) -> LiveState:
        return discover_by_steps(self.discovery(target, wanted), transport)

    def discovery(self, target: TargetSpec, wanted: Sequence[ResourceKey] = ()) -> Discovery:
        """Every kind's Get in one round trip; a failed Get is an error, never an absence.

        The OAuth signing certificate and the certificate store are read only when the manifest declares an
        OAuthCertificate (reading the store is a generic cmdlet, and a capture need not include it)."""
        certificates = any(k.kind == certificate.KIND for k in wanted)
        commands = (*_DISCOVERY, *certificate.DISCOVERY) if certificates else _DISCOVERY
        results = yield commands
        failed = [r for r in results if not r.ok]
        if failed or len(results) != len(commands):
            detail = failed[0].error if failed else "the batch returned too few results"
            raise DiscoveryError(f"target {target.name!r}: discovery failed: {detail}")
        resources: dict[ResourceKey, LiveResource] = {}
        for kind, result in zip(declared.KINDS, results[:len(declared.KINDS)], strict=True):
            for obj in _objects(result):
                identity, fields = kind.parse(obj)
                key = ResourceKey(target.name, kind.kind, identity)
                resources[key] = LiveResource(key, fields)
        if certificates:
            references, store = results[len(declared.KINDS):]
            key = ResourceKey(target.name, certificate.KIND, certificate.USE)
            resources[key] = LiveResource(key, certificate.parse(_objects(references), _objects(store)))
        return LiveState(target.name, resources)

    def signing_certificates(self, target: TargetSpec, resources: Sequence[DesiredResource],
                             live: LiveState) -> tuple[PublishedCertificate, ...]:
        """The pool's OAuthTokenIssuer certificates (current, next, previous) for the sides that trust it."""
        key = ResourceKey(target.name, certificate.KIND, certificate.USE)
        declared_here = next((r for r in resources if r.key.kind == certificate.KIND), None)
        if declared_here is None:
            raise ReferenceProblem(
                f"certificateOf: target {target.name!r} declares no {certificate.KIND} resource; declare "
                f"`kind: {certificate.KIND}, identity: {certificate.USE}` on it so its certificates are read")
        found = live.resources.get(key)
        return certificate.published(target.name, key.address, declared_here.fields,
                                     found.fields if found is not None else None)

    def commands(self, change: Change) -> tuple[Command, ...]:
        if change.key.kind == certificate.KIND:
            return certificate.commands(change)
        return DECLARED[change.key.kind].commands(change)

    def restore_commands(self, live: LiveResource) -> tuple[Command, ...]:
        if live.key.kind == certificate.KIND:
            return ()
        return DECLARED[live.key.kind].restore(live.fields, live.key.identity)


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def _objects(result: CommandResult) -> tuple[Mapping[str, Any], ...]:
    return tuple(o for o in result.output if isinstance(o, Mapping))
