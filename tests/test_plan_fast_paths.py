"""The plan's shortcuts give what the straightforward computations give (the plan, its fingerprints, its checks)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, cast

import httpx
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pytest_httpx import HTTPXMock

from reconciler import known_after_apply, planner
from reconciler.errors import MetadataError
from reconciler.kinds.spec import FieldSpec
from reconciler.metadata import Documents, MetadataDocument
from reconciler.model import (
    DesiredResource,
    DesiredState,
    Ensure,
    LiveResource,
    LiveState,
    Mode,
    ResourceKey,
    SourceLocation,
    TargetSpec,
)
from reconciler.plan import LiveFingerprints, fingerprint_live
from reconciler.providers.skype import SkypeProvider
from reconciler.trustgraph import declared, trust_diagnostics, trust_graph
from tests.e2e import ON_PREMISES, Estate
from tests.test_planner import registry
from tests.test_trustgraph import WRONG

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True),
                    st.text(max_size=6), st.sampled_from(["Full", "Partial", "ÿ\u2603", "a\x00b"]))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)), max_leaves=8)


def straightforward_fingerprint(live: LiveState) -> dict[str, str]:
    """What the live fingerprint means: the sha256 of each record's canonical JSON, then of them all."""
    def digest(value: Any) -> str:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    records = {key.address: digest(dict(res.fields)) for key, res in sorted(live.resources.items())}
    records["*"] = digest(records)
    return records


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(["PartnerApplication", "OAuthServer"]), st.text(min_size=1, max_size=5),
                          st.dictionaries(st.text(max_size=5), json_values, max_size=5), st.booleans()),
                max_size=8))
def test_fingerprints_are_the_canonical_json_hashes(records: list[tuple[str, str, dict[str, Any], bool]]) -> None:
    resources: dict[ResourceKey, LiveResource] = {}
    for kind, identity, fields, proxy in records:
        key = ResourceKey("t", kind, identity)
        resources[key] = LiveResource(key, types.MappingProxyType(fields) if proxy else fields)
    live = LiveState("t", resources)
    found = fingerprint_live(live)
    assert found == straightforward_fingerprint(live)
    assert list(found) == list(straightforward_fingerprint(live))  # the same order, as saved plans write it


def test_a_plans_fingerprints_are_worked_out_when_read_and_are_those_of_the_live_state_it_was_made_from() -> None:
    def state(target: str, trust: str) -> LiveState:
        key = ResourceKey(target, "PartnerApplication", "app")
        return LiveState(target, {key: LiveResource(key, {"applicationTrustLevel": trust})})

    live = {"a": state("a", "Full"), "b": state("b", "Partial")}
    lazy = LiveFingerprints(live)
    live["a"] = state("a", "Partial")  # read again later (an apply's re-read): the plan keeps what it saw
    assert list(lazy) == ["a", "b"] and len(lazy) == 2
    assert dict(lazy) == {"a": straightforward_fingerprint(state("a", "Full")),
                          "b": straightforward_fingerprint(state("b", "Partial"))}
    assert lazy["a"] is lazy["a"]  # worked out once


# --- the planner: an unchanged object is passed over without being planned ------------------------

values = st.sampled_from([None, "", "Full", "full", "Partial", True, False, [], ["a"],
                          "00000002-0000-0ff1-ce00-000000000000", "https://h/metadata/json/1"])
PARTNER_FIELDS = ["applicationIdentifier", "metadataUrl", "applicationTrustLevel", "useOAuthServer", "enabled",
                  "realm", "acceptSecurityIdentifierInformation"]
SERVER_FIELDS = ["metadataUrl", "type"]


def _never_equal(want: Any, have: Any, desired: Mapping[str, Any]) -> bool:
    return False


_SERVER = SkypeProvider.kinds["OAuthServer"]
KINDS = {**SkypeProvider.kinds, "OAuthServer": dataclasses.replace(_SERVER, fields={
    **_SERVER.fields, "type": FieldSpec("type", equal=_never_equal)})}
"""Skype's kinds, one field of which compares with a function of its own that finds equal values different."""


@st.composite
def estates(draw: st.DrawFn) -> tuple[list[DesiredResource], list[LiveResource], Mode]:
    desired, live = [], []
    for index in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["PartnerApplication", "OAuthServer"]))
        names = PARTNER_FIELDS if kind == "PartnerApplication" else SERVER_FIELDS
        wanted = draw(st.dictionaries(st.sampled_from(names), values, max_size=4))
        identity = f"app{index}"
        mode = draw(st.sampled_from([None, Mode.ENFORCE, Mode.WARN]))
        ensure = draw(st.sampled_from([Ensure.PRESENT, Ensure.PRESENT, Ensure.ABSENT]))
        desired.append(DesiredResource(ResourceKey("pool", kind, identity), ensure, wanted,
                                       SourceLocation("m.yaml", index + 1, f"resources[{index}]"), mode=mode))
        if draw(st.booleans()):
            same = draw(st.booleans())
            fields = {**draw(st.dictionaries(st.sampled_from(names), values, max_size=4)), **(wanted if same else {})}
            live.append(LiveResource(ResourceKey("pool", kind, identity.upper() if draw(st.booleans()) else identity),
                                     fields))
    return desired, live, draw(st.sampled_from([Mode.ENFORCE, Mode.WARN]))


@SETTINGS
@given(estates())
def test_the_planner_plans_each_resource_as_plan_resource_does(
        estate: tuple[list[DesiredResource], list[LiveResource], Mode]) -> None:
    desired, live, mode = estate
    target = TargetSpec("pool", "skype", {"transport": "lab", "host": "h"}, mode=mode)
    kinds = KINDS
    by_id = {(r.key.kind, r.key.identity.casefold()): r for r in live}
    expected = []
    for want in desired:
        change = planner._plan_resource(want, by_id.get((want.key.kind, want.key.identity.casefold())),
                                        kinds[want.key.kind], want.mode or mode)
        if change is not None:
            expected.append(change)
    found = planner._plan_target(desired, LiveState("pool", {r.key: r for r in live}), target, kinds)
    assert found == expected
    assert [c.kind for c in found] == [kinds[c.key.kind] for c in expected]


# --- known after apply: a resource with no mapping value refers to nothing --------------------------

@SETTINGS
@given(st.dictionaries(st.sampled_from(["applicationIdentifier", "realm", "x"]), st.one_of(
    json_values, st.fixed_dictionaries({"from": st.sampled_from(["other.Application.app", "bad", "a.B.c.d"]),
                                        "field": st.sampled_from(["appId", "x", 1])}))))
def test_references_are_found_as_reference_finds_them(fields: dict[str, Any]) -> None:
    resource = DesiredResource(ResourceKey("pool", "PartnerApplication", "app"), Ensure.PRESENT, fields,
                               SourceLocation("m.yaml", 1, "resources[0]"))
    assert known_after_apply.references(resource) == [
        (name, ref) for name, value in fields.items() if (ref := known_after_apply.reference(value)) is not None]
    state = DesiredState("m.yaml", "x", {}, (resource,))
    resolved = known_after_apply.resolve(state, {})
    if known_after_apply.references(resource):
        assert resolved.resources[0].fields == {
            **fields, **{name: ref.placeholder for name, ref in known_after_apply.references(resource)}}
    else:
        assert resolved is state


# --- the trust checks of a plan are the trust graph's ---------------------------------------------

class Fetched:
    """Documents already read (what a run's shared downloads answer)."""

    def __init__(self, answers: Mapping[str, MetadataDocument | MetadataError]) -> None:
        self.answers = answers

    def fetch(self, urls: Iterable[str]) -> dict[str, MetadataDocument | MetadataError]:
        return {url: self.answers[url] for url in urls}


SERVICES = ["00000002-0000-0ff1-ce00-000000000000", "00000004-0000-0ff1-ce00-000000000000",
            "00000003-0000-0ff1-ce00-000000000000"]


@st.composite
def trust_estates(draw: st.DrawFn) -> tuple[DesiredState, dict[str, MetadataDocument | MetadataError]]:
    urls = [f"https://h{i}/metadata/json/1" for i in range(3)]
    answers: dict[str, MetadataDocument | MetadataError] = {}
    for url in urls:
        if draw(st.booleans()):
            answers[url] = MetadataError(url, "connection failed: refused")
        else:
            answers[url] = MetadataDocument(url, draw(st.sampled_from([*SERVICES, None])),
                                            draw(st.sampled_from(["contoso.com", "fabrikam.com", None])), None, None,
                                            (), draw(st.sampled_from(["json", "federation"])))
    targets, resources = {}, []
    for t in range(draw(st.integers(1, 3))):
        name = f"pool{t}"
        targets[name] = TargetSpec(name, "skype", {"transport": "lab", "host": name})
        config = draw(st.dictionaries(st.sampled_from(["realm", "serviceName"]),
                                      st.sampled_from(["contoso.com", "fabrikam.com", *SERVICES]), max_size=2))
        if config or draw(st.booleans()):
            resources.append(DesiredResource(ResourceKey(name, "OAuthConfiguration", "Global"), Ensure.PRESENT,
                                             config, SourceLocation("m.yaml", 1, "r")))
        for a in range(draw(st.integers(0, 5))):
            fields: dict[str, Any] = {}
            if draw(st.booleans()):
                fields["metadataUrl"] = draw(st.sampled_from(urls))
            if draw(st.booleans()) or not fields:
                fields["applicationIdentifier"] = draw(st.sampled_from(SERVICES))
            resources.append(DesiredResource(
                ResourceKey(name, draw(st.sampled_from(["PartnerApplication", "OAuthServer"])), f"app{a}"),
                draw(st.sampled_from([Ensure.PRESENT, Ensure.ABSENT])), fields, SourceLocation("m.yaml", 10 + a, "r")))
    return DesiredState("m.yaml", "x", targets, tuple(resources)), answers


@SETTINGS
@given(trust_estates())
def test_a_plans_trust_checks_are_the_trust_graphs_diagnostics(
        estate: tuple[DesiredState, dict[str, MetadataDocument | MetadataError]]) -> None:
    desired, answers = estate
    documents = cast(Documents, Fetched(answers))
    graph = trust_graph(desired, registry(), documents=documents)
    assert trust_diagnostics(desired, registry(), documents=documents) == graph.diagnostics
    assert trust_diagnostics(desired, registry(), documents=documents,
                             parts=declared(desired, registry())) == graph.diagnostics


# --- documents downloaded in the background are the ones fetched -----------------------------------

def test_documents_started_early_are_downloaded_once_and_answered_by_fetch(httpx_mock: HTTPXMock) -> None:
    urls = [f"https://h{i}.example/metadata/json/1" for i in range(4)]
    for url in urls[:3]:
        httpx_mock.add_response(url=url, status_code=404)
    httpx_mock.add_exception(httpx.ConnectError("refused"), url=urls[3])
    with Documents(5.0) as documents:
        documents.start(urls[:3])
        documents.start(urls[:2])  # already under way: not again
        found = documents.fetch(urls)
    assert list(found) == urls
    assert [str(found[url]) for url in urls[:3]] == [str(MetadataError(url, "HTTP 404")) for url in urls[:3]]
    assert isinstance(found[urls[3]], MetadataError) and "refused" in str(found[urls[3]])
    assert sorted(str(r.url) for r in httpx_mock.get_requests()) == sorted(urls)


def test_closing_drops_downloads_not_begun_and_does_not_wait_for_one_under_way(httpx_mock: HTTPXMock) -> None:
    import threading
    import time

    urls = [f"https://h{i}.example/metadata/json/1" for i in range(3)]
    entered, release = threading.Event(), threading.Event()

    def slow(request: httpx.Request) -> httpx.Response:
        entered.set()
        release.wait(30)
        return httpx.Response(404)

    httpx_mock.add_callback(slow, url=urls[0])
    documents = Documents(5.0, concurrency=1)
    documents.start(urls)
    assert entered.wait(30)
    documents.close()  # returns with the first download still under way
    assert documents._client is not None  # left to it
    release.set()
    for _ in range(3000):  # the downloader ends once its download does, and closes the client as the last one
        if documents._workers == 0:
            break
        time.sleep(0.01)
    assert documents._workers == 0 and documents._client is None
    assert [str(r.url) for r in httpx_mock.get_requests()] == urls[:1]  # the others were dropped


# --- a plan whose documents started downloading before discovery is the same plan -------------------

def _plan_document(estate: Estate, manifest: Path, early: bool) -> dict[str, Any]:
    from reconciler.manifest import load_manifest
    from reconciler.providers.base import Registry
    from reconciler.render.json_plan import plan_to_json
    from reconciler.runner import Settings, discover, make_plan, open_session, start_downloads

    registry = Registry.from_entry_points()
    desired = load_manifest(manifest, registry, {"lab": estate.url})
    settings = Settings(state_dir=estate.root / "state")
    with open_session(desired, registry) as session:
        def meanwhile() -> None:
            start_downloads(session, settings)
            assert session.downloads is not None and session.downloads.trust.urls

        plan = make_plan(session, discover(session, meanwhile=meanwhile if early else None), settings)
        document = plan_to_json(plan, session.kind_of)
    assert session.downloads is None  # closed with the session
    return {**document, "created_at": ""}


def test_documents_downloaded_from_before_discovery_give_the_same_plan(estate: Estate) -> None:
    wrong = estate.write("wrong.yaml", WRONG)  # a link to a host that serves another service: a trust error
    for manifest in (ON_PREMISES, wrong):
        early = _plan_document(estate, manifest, early=True)
        assert early == _plan_document(estate, manifest, early=False)
    assert any("trust:" in d["message"] for d in early["diagnostics"])


# --- the journal, read once for every target --------------------------------------------------------

names = st.sampled_from(["pool", "pool.a", "a", "b.c", "b"])
journal_events = st.fixed_dictionaries({
    "event": st.sampled_from(["batch_start", "batch_end", "batch_undelivered", "handler", "other"]),
    "time": st.sampled_from(["t1", "t2"]),
}, optional={
    "target": st.one_of(names, st.integers(0, 2), st.lists(names, max_size=1)),
    "address": st.one_of(st.builds("{}.{}".format, names, st.sampled_from(["PartnerApplication.x", "handler.h",
                                                                            "x"])), names, st.integers(0, 1)),
    "changes": st.lists(st.fixed_dictionaries({"address": st.builds("{}.K.x".format, names),
                                               "replaced": st.one_of(st.none(), st.just({"f": 1}))}), max_size=2),
    "handlers_due": st.lists(st.builds("{}.handler.h".format, names), max_size=1),
    "outcomes": st.lists(st.fixed_dictionaries({"address": st.builds("{}.K.x".format, names),
                                                "status": st.sampled_from(["ok", "failed", "skipped"])}), max_size=2),
    "error": st.one_of(st.none(), st.just("boom")),
})


@SETTINGS
@given(st.lists(journal_events, max_size=8), st.lists(names, unique=True, max_size=4))
@example([{"event": "batch_start", "time": "t1", "target": "pool", "handlers_due": ["pool.handler.h"]},
          {"event": "handler", "time": "t2", "address": "pool.handler.h"},
          {"event": "batch_start", "time": "t2", "address": "b.c.K.x", "changes": [
              {"address": "b.c.K.x", "replaced": {"f": 1}}]}], ["pool", "b", "b.c"])
def test_each_targets_journal_replays_as_the_whole_journal_does(events: list[dict[str, Any]],
                                                                targets: list[str]) -> None:
    from reconciler.journal import unfinished
    from reconciler.runner import _events_by_target

    journal = _events_by_target(events, targets)
    for name in targets:
        assert unfinished(journal.get(name, []), name) == unfinished(events, name)


# --- rendering ---------------------------------------------------------------------------------------

@SETTINGS
@given(json_values)
def test_a_value_is_shown_as_json_dumps_shows_it(value: Any) -> None:
    from reconciler.render.text import _fmt

    expected = json.dumps(value, ensure_ascii=False) if isinstance(value, str) else json.dumps(value)
    assert _fmt(value) == expected
