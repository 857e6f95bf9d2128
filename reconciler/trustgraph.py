"""The trust graph: which system accepts tokens from which, and whether each link can work.

Built from the manifest (what each target says it is, and whom it trusts) and the metadata
documents the links point at (downloaded with httpx). Checked before anything is applied, because
a link that cannot work fails silently in production: users just lose conversation history.

Checks (each names the resource and its manifest line):
- a partner application whose URL serves another service than the identifier it expects;
- a metadata document whose realm disagrees with what the trusted side declares;
- a realm declared on a target (e.g. Skype's OAuth configuration) that its own metadata document
  does not carry.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from reconciler.errors import MetadataError
from reconciler.metadata import Documents, MetadataDocument
from reconciler.model import DesiredState, Severity
from reconciler.plan import Diagnostic
from reconciler.providers.base import Registry, ServiceIdentity, TrustEdge


@dataclass(frozen=True)
class Node:
    name: str
    label: str
    service_name: str | None
    realm: str | None
    declared: bool


@dataclass(frozen=True)
class LinkCertificate:
    """A signing certificate the trusted side publishes on a link's document: its dates, and every side (trusting
    target) that reads a document publishing it, so already trusts it."""

    thumbprint: str
    not_before: str
    not_after: str
    trusted_by: tuple[str, ...]

    def text(self) -> str:
        return (f"{self.thumbprint} valid {self.not_before[:10]} to {self.not_after[:10]}, trusted by "
                f"{', '.join(self.trusted_by)}")


class LinkStatus(enum.StrEnum):
    """The verdict on one trust link."""

    OK = "ok"
    """Its document names the expected service and realm (or it has no document to check: named by its identifier)."""
    ERROR = "error"
    """Its document names another service, or a realm other than the trusted target declares: tokens will fail."""
    UNCHECKED = "unchecked"
    """Its document could not be read: a plan warns."""


@dataclass(frozen=True)
class Link:
    source: str
    dest: str
    edge: TrustEdge
    status: LinkStatus
    message: str
    certificates: tuple[LinkCertificate, ...] = ()


@dataclass(frozen=True)
class TrustGraph:
    nodes: tuple[Node, ...]
    links: tuple[Link, ...]
    diagnostics: tuple[Diagnostic, ...]


def _same(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and a.casefold() == b.casefold()


@dataclass(frozen=True)
class Declared:
    """What the manifest declares for the graph: each target's identity and the trusts (edges), in manifest order."""

    identities: dict[str, ServiceIdentity]
    edges: tuple[TrustEdge, ...]

    @property
    def urls(self) -> list[str]:
        """The metadata documents the graph reads (each once, sorted)."""
        return sorted({e.url for e in self.edges if e.url})


def declared(desired: DesiredState, registry: Registry) -> Declared:
    """Each target's identity and declared trusts, from its provider (`identity`, `trust_edges`)."""
    identities: dict[str, ServiceIdentity] = {}
    edges: list[TrustEdge] = []
    for name, target in desired.targets.items():
        provider = registry.provider(target.provider)
        resources = desired.for_target(name)
        identity = getattr(provider, "identity", None)
        trust_edges = getattr(provider, "trust_edges", None)
        if callable(identity):
            identities[name] = identity(target, resources)
        if callable(trust_edges):
            edges.extend(trust_edges(target, resources))
    return Declared(identities, tuple(edges))


class _Judge:
    """Where each link leads and whether it can work, from the manifest's identities and the documents read. A
    link's verdict depends only on its URL and expected identifier (many links share a URL): each pair with a URL
    is judged once."""

    def __init__(self, identities: dict[str, ServiceIdentity],
                 fetched: Mapping[str, MetadataDocument | MetadataError]) -> None:
        self.identities = identities
        self.fetched = fetched
        self.by_service: dict[str, list[str]] = {}  # identities by folded service name, in manifest order
        for name, ident in identities.items():
            if ident.service_name is not None:
                self.by_service.setdefault(ident.service_name.casefold(), []).append(name)
        self._verdicts: dict[tuple[str | None, str | None], tuple[str, Node | None, LinkStatus, str]] = {}

    def verdict(self, edge: TrustEdge) -> tuple[str, Node | None, LinkStatus, str]:
        """(destination, its node when the manifest does not declare it, status, message) of a link."""
        if not edge.url:
            return self._judge(edge)  # named by its identifier alone: most such links name one of their own
        key = (edge.url, edge.application_identifier)
        found = self._verdicts.get(key)
        if found is None:
            found = self._verdicts[key] = self._judge(edge)
        return found

    def _judge(self, edge: TrustEdge) -> tuple[str, Node | None, LinkStatus, str]:
        doc = self.fetched.get(edge.url) if edge.url else None
        service = doc.service_name if isinstance(doc, MetadataDocument) else edge.application_identifier
        realm = doc.realm if isinstance(doc, MetadataDocument) else None
        dest = _match(self.identities, self.by_service, service, realm)
        node = None
        if dest is None:
            dest = f"{service or edge.url or '?'}@{realm}" if realm else (service or edge.url or "?")
            node = Node(dest, "not in this manifest", service, realm, False)
        status, message = LinkStatus.OK, "ok"
        if isinstance(doc, MetadataError):
            status, message = LinkStatus.UNCHECKED, f"cannot check: {doc.detail}"
        elif isinstance(doc, MetadataDocument):
            trusted = self.identities.get(dest)
            # A federation document (Entra ID, AD FS) names its issuer, not the application an AuthServer's
            # ApplicationIdentifier names (the 2025 EvoSts setup): nothing to compare there.
            if edge.application_identifier and doc.kind != "federation" \
                    and not _same(doc.service_name, edge.application_identifier):
                status = LinkStatus.ERROR
                message = (f"{edge.url} serves {doc.service_name or 'no service name'}, not the expected "
                           f"{edge.application_identifier}: the link points at a host that does not serve the "
                           "expected service")
            elif trusted is not None and trusted.realm and doc.realm and not _same(trusted.realm, doc.realm):
                status = LinkStatus.ERROR
                message = (f"the metadata document at {edge.url} carries realm {doc.realm!r} but {dest} declares "
                           f"realm {trusted.realm!r}: tokens from {dest} will not be accepted")
        return dest, node, status, message

    def problem(self, edge: TrustEdge, status: LinkStatus, message: str) -> Diagnostic | None:
        """What the plan says of a link in this state (None: nothing)."""
        if status is LinkStatus.UNCHECKED:
            doc = self.fetched.get(edge.url) if edge.url else None
            detail = doc.detail if isinstance(doc, MetadataError) else ""
            return Diagnostic(Severity.WARNING, f"trust: {edge.via}: cannot check the link to {edge.url}: {detail}",
                              edge.address, edge.location)
        if status is LinkStatus.ERROR:
            return Diagnostic(Severity.ERROR, f"trust: {message}", edge.address, edge.location)
        return None

    def realm_problems(self) -> list[Diagnostic]:
        """A target declaring a realm that no downloaded document of its own service carries."""
        found = []
        documents_of: dict[str, list[MetadataDocument]] = {}  # downloaded documents by folded service name
        for doc in self.fetched.values():
            if isinstance(doc, MetadataDocument) and doc.service_name is not None:
                documents_of.setdefault(doc.service_name.casefold(), []).append(doc)
        for name, identity in self.identities.items():
            if not identity.realm or not identity.service_name:
                continue
            own = documents_of.get(identity.service_name.casefold(), [])
            if own and not any(_same(d.realm, identity.realm) for d in own):
                carried = ", ".join(sorted({repr(d.realm) for d in own}))
                found.append(Diagnostic(
                    Severity.ERROR, f"trust: {name} declares realm {identity.realm!r}, but no metadata document of "
                             f"{identity.service_name} carries it (they carry {carried}); partners will reject its "
                             "tokens", None, None))
        return found


def _fetched(urls: list[str], timeout: float, client: httpx.Client | None,
             documents: Documents | None) -> dict[str, MetadataDocument | MetadataError]:
    with contextlib.ExitStack() as stack:
        if documents is None:
            documents = stack.enter_context(Documents(timeout, client))
        return documents.fetch(urls)


def trust_diagnostics(desired: DesiredState, registry: Registry, *, timeout: float = 10.0,
                      client: httpx.Client | None = None, documents: Documents | None = None,
                      parts: Declared | None = None) -> tuple[Diagnostic, ...]:
    """`trust_graph(...).diagnostics`, without building the graph (what a plan reports). `parts`: the manifest's
    identities and edges when already worked out (`declared`)."""
    parts = parts if parts is not None else declared(desired, registry)
    judge = _Judge(parts.identities, _fetched(parts.urls, timeout, client, documents))
    found = []
    for edge in parts.edges:
        if not edge.url:
            continue  # no document: a link that is not checked is "ok", whatever it leads to
        _, _, status, message = judge.verdict(edge)
        if status is not LinkStatus.OK and (problem := judge.problem(edge, status, message)) is not None:
            found.append(problem)
    return tuple(found + judge.realm_problems())


def trust_graph(desired: DesiredState, registry: Registry, *, timeout: float = 10.0,
                client: httpx.Client | None = None, documents: Documents | None = None) -> TrustGraph:
    """The graph and its diagnostics, in time linear in targets + resources + links.

    `documents`: the run's shared downloads (the plan-time checks read the same ones); without it, this
    call's own. Each document is downloaded once, concurrently.
    """
    parts = declared(desired, registry)
    fetched = _fetched(parts.urls, timeout, client, documents)
    judge = _Judge(parts.identities, fetched)
    nodes: dict[str, Node] = {
        name: Node(name, i.label, i.service_name, i.realm, True) for name, i in parts.identities.items()}
    found: list[Diagnostic] = []
    judged: list[tuple[TrustEdge, str, LinkStatus, str]] = []
    for edge in parts.edges:
        dest, node, status, message = judge.verdict(edge)
        if node is not None:
            nodes.setdefault(dest, node)
        if status is not LinkStatus.OK and (problem := judge.problem(edge, status, message)) is not None:
            found.append(problem)
        judged.append((edge, dest, status, message))

    trusted_by: dict[str, list[str]] = {}  # thumbprint -> the trusting targets whose documents publish it
    for edge, _, _, _ in judged:
        doc = fetched.get(edge.url) if edge.url else None
        for key in doc.keys if isinstance(doc, MetadataDocument) else ():
            sides = trusted_by.setdefault(key.thumbprint, [])
            if edge.target not in sides:
                sides.append(edge.target)
    shown: dict[str, tuple[LinkCertificate, ...]] = {}  # by URL: many links lead to one document
    for edge, _, _, _ in judged:
        if edge.url and edge.url not in shown:
            shown[edge.url] = _certificates(fetched.get(edge.url), trusted_by)
    links = [Link(edge.target, dest, edge, status, message, shown[edge.url] if edge.url else ())
             for edge, dest, status, message in judged]
    return TrustGraph(tuple(nodes.values()), tuple(links), tuple(found + judge.realm_problems()))


def _certificates(doc: MetadataDocument | MetadataError | None, trusted_by: dict[str, list[str]]
                  ) -> tuple[LinkCertificate, ...]:
    if not isinstance(doc, MetadataDocument):
        return ()
    from cryptography import x509  # the certificates' dates, for the graph (a plan does not ask for them)

    out = []
    for key in doc.keys:
        try:
            cert = x509.load_der_x509_certificate(key.certificate_der)
        except ValueError:
            continue
        out.append(LinkCertificate(key.thumbprint, cert.not_valid_before_utc.isoformat(),
                                   cert.not_valid_after_utc.isoformat(), tuple(trusted_by.get(key.thumbprint, ()))))
    return tuple(out)


def _match(identities: dict[str, ServiceIdentity], by_service: dict[str, list[str]], service: str | None,
           realm: str | None) -> str | None:
    candidates = by_service.get(service.casefold(), []) if service is not None else []
    exact = [n for n in candidates if realm is None or identities[n].realm is None or _same(identities[n].realm, realm)]
    chosen = exact or candidates
    return chosen[0] if chosen else None


def _node_text(node: Node) -> str:
    who = f"{node.service_name}@{node.realm}" if node.realm else (node.service_name or "")
    return f"{node.name} ({node.label}{', ' + who if who and who != node.name else ''})"


def graph_text(graph: TrustGraph) -> str:
    lines = ["Trust relationships (an arrow means: accepts tokens from):", ""]
    names = {n.name: n for n in graph.nodes}
    by_source: dict[str, list[Link]] = {}
    for link in graph.links:
        by_source.setdefault(link.source, []).append(link)
    for node in graph.nodes:
        mine = by_source.get(node.name, [])
        if not node.declared and not mine:
            continue
        lines.append(f"  {_node_text(node)}")
        for link in mine:
            dest = names[link.dest]
            where = f" {link.edge.url}" if link.edge.url else ""
            lines.append(f"    -> {dest.name}{'' if dest.declared else ' (not in this manifest)'}"
                         f"  via {link.edge.via}{where}  [{link.status}]")
            if link.status is not LinkStatus.OK:
                lines.append(f"       {link.message}")
            lines.extend(f"       certificate {c.text()}" for c in link.certificates)
    problems = [str(d) for d in graph.diagnostics]
    lines += ["", *problems] if problems else []
    broken = sum(1 for link in graph.links if link.status is LinkStatus.ERROR)
    lines.append(f"\n{len(graph.links)} links, {broken} broken.")
    return "\n".join(lines) + "\n"


_COLOURS = {LinkStatus.OK: "darkgreen", LinkStatus.ERROR: "red", LinkStatus.UNCHECKED: "gray"}


WELL_KNOWN = {
    "00000001-0000-0000-c000-000000000000": "Office 365 (ACS)",
    "00000002-0000-0ff1-ce00-000000000000": "Exchange",
    "00000003-0000-0ff1-ce00-000000000000": "SharePoint",
    "00000004-0000-0ff1-ce00-000000000000": "Skype for Business",
}
"""Microsoft's first-party service names (application ids): what a node the manifest does not declare is called."""


def node_lines(node: Node) -> tuple[str, str, str]:
    """A node for a picture: its name, what it is (or its service id), and the id and realm for a tooltip.

    A declared target is named by its target name; a service the manifest does not declare by the product its
    well-known id names (the id itself on the second line), never by a GUID alone."""
    who = f"{node.service_name}@{node.realm}" if node.realm and node.service_name else \
        (node.service_name or node.realm or "")
    if node.declared:
        return node.name, node.label + (f", realm {node.realm}" if node.realm else ""), who or node.name
    known = WELL_KNOWN.get((node.service_name or "").casefold())
    if known is not None:
        return known, f"{who} (not in this manifest)", who
    return node.name, "not in this manifest", who or node.name


def _dot(text: str) -> str:
    """A DOT double-quoted string; a line break is DOT's own `\\n` escape (centred line), not a literal one."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def graph_dot(graph: TrustGraph) -> str:
    """Graphviz DOT: `reconcile graph M --format dot | dot -Tsvg > trust.svg`."""
    out = ["digraph trust {", "  rankdir=LR;", "  node [shape=box, style=rounded, fontname=Helvetica];",
           "  edge [fontname=Helvetica, fontsize=10];"]
    for node in graph.nodes:
        name, what, tooltip = node_lines(node)
        style = "" if node.declared else ', style="rounded,dashed"'
        out.append(f"  {_dot(node.name)} [label={_dot(name + chr(10) + what)}, tooltip={_dot(tooltip)}{style}];")
    for link in graph.links:
        label = link.edge.via + ("" if link.status is LinkStatus.OK else f" ({link.status})")
        label += "".join(f"\n{c.thumbprint[:8]}... to {c.not_after[:10]}" for c in link.certificates)
        tooltip = link.edge.url or link.edge.application_identifier or link.edge.via
        tooltip += "" if link.status is LinkStatus.OK else f": {link.message}"
        out.append(f"  {_dot(link.source)} -> {_dot(link.dest)} "
                   f"[label={_dot(label)}, tooltip={_dot(tooltip)}, color={_COLOURS[link.status]}];")
    out.append("}")
    return "\n".join(out) + "\n"


def graph_mermaid(graph: TrustGraph) -> str:
    """Mermaid flowchart (renders in GitHub and most wikis)."""
    ids = {node.name: f"n{i}" for i, node in enumerate(graph.nodes)}

    def safe(text: str) -> str:
        return text.replace('"', "'")

    out = ["flowchart LR"]
    for node in graph.nodes:
        name, what, _ = node_lines(node)
        out.append(f'  {ids[node.name]}["{safe(name)}<br/>{safe(what)}"]')
    for link in graph.links:
        arrow = "-->" if link.status is LinkStatus.OK else "-.->"
        out.append(f'  {ids[link.source]} {arrow}|"{safe(link.edge.via)}: {link.status}"| {ids[link.dest]}')
    return "\n".join(out) + "\n"
