"""What the performance work must keep true (no timings here: `make bench` measures those)."""

from __future__ import annotations

from pathlib import Path

from reconciler.lab.state import LabStore
from reconciler.lab.transport import LabTransport
from reconciler.transports.base import Command

LITWARE_POOL = "atl-cs-001"


def test_a_read_only_round_trip_counts_without_rewriting_the_state(lab_state: Path) -> None:
    state = lab_state
    store = LabStore(state)
    before = state.stat()
    transport = LabTransport(state, LITWARE_POOL)
    transport.invoke([Command("Get-CsOAuthConfiguration", {}), Command("Get-CsPartnerApplication", {})])
    transport.invoke([Command("Get-CsPartnerApplication", {})])
    after = state.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # not rewritten
    host = store.read()["hosts"][LITWARE_POOL]
    assert host["roundTrips"] == 2
    assert host["calls"] == {"Get-CsOAuthConfiguration": 1, "Get-CsPartnerApplication": 2}

    # A round trip that changes something writes the state, its counts folded in.
    [result] = transport.invoke([Command("Set-CsOAuthConfiguration", {"Realm": "example.com"})])
    assert result.ok, result.error
    assert not store.trips_path.exists()
    host = store.read()["hosts"][LITWARE_POOL]
    assert host["roundTrips"] == 3 and host["calls"]["Get-CsPartnerApplication"] == 2
    assert host["objects"]["OAuthConfiguration"]["Realm"] == "example.com"
    transport.close()
