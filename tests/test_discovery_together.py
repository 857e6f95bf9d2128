"""Targets read together from one thread (reconciler.runner._Together): a provider's discovery as steps over a
transport that overlaps round trips reads exactly what a thread per target reads, keeps --parallel, and fails as a
thread fails; the lab's round trip waits its latency from when it was sent."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from reconciler.commands import Command, CommandResult, Overlapping
from reconciler.errors import DiscoveryError
from reconciler.lab import transport as lab_transport
from reconciler.lab.transport import LabTransport
from reconciler.manifest import load_manifest
from reconciler.model import LiveState
from reconciler.providers.base import Registry
from reconciler.runner import discover, open_session
from tests.e2e import Estate
from tests.test_multi_target import both


class _OneAtATime:
    """A lab transport without `begin`: read by a thread of its own, as a WinRM target is."""

    def __init__(self, inner: LabTransport) -> None:
        self.inner = inner

    def invoke(self, commands: Sequence[Command], *, stop_on_error: bool = True) -> list[CommandResult]:
        return self.inner.invoke(commands, stop_on_error=stop_on_error)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def manifest(estate: Estate) -> Path:
    """Two Skype pools (lab) and an Office 365 tenant (Graph, read by a thread of its own)."""
    return estate.write("both.yaml", both(estate))


def _read(estate: Estate, manifest: Path, *, overlap: bool, parallel: int = 8,
          seen: list[str] | None = None) -> dict[str, LiveState]:
    registry = Registry.from_entry_points()
    desired = load_manifest(manifest, registry, {"lab": estate.url})
    told: list[str] = [] if seen is None else seen
    with open_session(desired, registry, parallel, progress=told.append) as session:
        for name in desired.targets:
            transport = session.transport(name)
            if not overlap and isinstance(transport, LabTransport):
                session.transports[name] = _OneAtATime(transport)
        return discover(session)


def test_targets_read_together_read_what_a_thread_each_reads(estate: Estate, manifest: Path) -> None:
    told: list[str] = []
    together = _read(estate, manifest, overlap=True, seen=told)
    threaded = _read(estate, manifest, overlap=False)
    assert list(together) == list(threaded) == ["fabrikam-pool", "fabrikam-tenant", "litware-pool", "litware-exchange"]
    assert together == threaded
    assert sorted(line.split(":")[0] for line in told) == sorted(f"read {name}" for name in together)
    assert estate.round_trips("atl-cs-001") == 2  # one round trip per read


def test_the_lab_transport_overlaps_and_its_latency_counts_from_the_send(lab_state: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    slept: list[float] = []

    class Clock:
        @staticmethod
        def monotonic() -> float:
            return now[0]

        @staticmethod
        def sleep(seconds: float) -> None:
            slept.append(round(seconds, 6))
            now[0] += seconds

    monkeypatch.setattr(lab_transport, "time", Clock)
    one, two = (LabTransport(lab_state, "atl-cs-001", latency_ms=50) for _ in range(2))
    assert isinstance(one, Overlapping)
    get = [Command("Get-CsOAuthConfiguration", {})]
    first, second = one.begin(get), two.begin(get)  # both sent at 100.0
    now[0] += 0.01  # reading something else meanwhile
    assert first.result()[0].ok and second.result()[0].ok
    assert slept == [0.04]  # the first waits what is left of its latency; the second's is over by then
    assert one.invoke(get)[0].ok and slept == [0.04, 0.05]  # invoke: send and wait at once
    one.close()
    two.close()


def test_the_lab_reads_while_a_round_trip_is_under_way_and_changes_only_after_it(
        lab_state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch of Gets runs when it is sent (the server's work fills the latency, as a remote server's does); a
    batch that changes the state runs only once its latency is over, when its answer is read: one given up while it
    waits (an interrupted apply) has changed nothing."""
    now = [100.0]
    monkeypatch.setattr(lab_transport, "time", type("Clock", (), {
        "monotonic": staticmethod(lambda: now[0]), "sleep": staticmethod(lambda s: now.__setitem__(0, now[0] + s))}))
    transport = LabTransport(lab_state, "atl-cs-001", latency_ms=50)
    store = transport.store

    def trips() -> Any:
        return store.parse(store.read_text())["hosts"]["atl-cs-001"].get("roundTrips")

    before = trips()
    read = transport.begin([Command("Get-CsOAuthConfiguration", {})])
    assert trips() == (before or 0) + 1  # read already, its answer not yet given
    assert now == [100.0]
    assert read.result()[0].ok and now == [100.05]
    change = transport.begin([Command("Set-CsOAuthConfiguration", {"ServiceName": "00000004-0000-0ff1-ce00-0"})])
    assert trips() == (before or 0) + 1  # sent, not run
    del change  # given up while it waits
    assert trips() == (before or 0) + 1
    transport.close()


def test_parallel_bounds_the_round_trips_in_flight(estate: Estate, manifest: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    in_flight = [0, 0]  # now, most
    begin = LabTransport.begin

    def counted(self: LabTransport, commands: Sequence[Command], *, stop_on_error: bool = True) -> Any:
        in_flight[0] += 1
        in_flight[1] = max(in_flight[1], in_flight[0])
        pending = begin(self, commands, stop_on_error=stop_on_error)
        result = pending.result

        def answered() -> list[CommandResult]:
            in_flight[0] -= 1
            return result()

        object.__setattr__(pending, "result", answered)
        return pending

    monkeypatch.setattr(LabTransport, "begin", counted)
    assert len(_read(estate, manifest, overlap=True, parallel=2)) == 4
    assert in_flight == [0, 1]  # 2 at once, one of them the tenant's thread: one lab round trip in flight
    _read(estate, manifest, overlap=True, parallel=8)
    assert in_flight == [0, 3]  # the three lab targets at once


def test_a_target_that_fails_fails_the_read_as_its_thread_would(estate: Estate, manifest: Path) -> None:
    estate.lab("fail", "fab-cs-001", "Get-CsPartnerApplication", "--message", "access denied")
    estate.lab("fail", "fab-cs-001", "Get-CsPartnerApplication", "--message", "access denied")
    errors = []
    for overlap in (True, False):
        with pytest.raises(DiscoveryError) as caught:
            _read(estate, manifest, overlap=overlap)
        errors.append(str(caught.value))
    assert errors[0] == errors[1]
    assert "fabrikam-pool" in errors[0] and "access denied" in errors[0]


def test_a_host_the_lab_lacks_is_told_and_raised_as_a_thread_would(estate: Estate, manifest: Path) -> None:
    registry = Registry.from_entry_points()
    text = manifest.read_text(encoding="utf-8")
    assert "host: fab-cs-001" in text
    desired = load_manifest(estate.write("both.yaml", text.replace("host: fab-cs-001", "host: nowhere-001", 1)),
                            registry, {"lab": estate.url})
    told: list[str] = []
    with open_session(desired, registry, 8, progress=told.append) as session, \
            pytest.raises(DiscoveryError, match=r"fabrikam-pool.*cannot read live state.*nowhere-001"):
        discover(session)
    assert "read fabrikam-pool: failed" in told
    assert any(line.startswith("read litware-pool: ") for line in told)  # the others were read on
