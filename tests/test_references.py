"""The order of targets in one apply and the rotation timeline, as functions (reconciler.references, runner)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from reconciler.kinds.certificates import CertificateRole, PublishedCertificate
from reconciler.references import timeline
from reconciler.runner import waves


def test_a_target_is_changed_after_the_targets_whose_certificates_it_takes() -> None:
    depends = {"tenant": frozenset({"pool"}), "exchange": frozenset({"pool"}), "sharepoint": frozenset({"exchange"})}
    assert waves(["sharepoint", "tenant", "exchange", "pool"], depends) == [["pool"], ["tenant", "exchange"],
                                                                            ["sharepoint"]]


def test_a_source_not_changed_in_this_apply_orders_nothing() -> None:
    assert waves(["tenant", "exchange"], {"tenant": frozenset({"pool"})}) == [["tenant", "exchange"]]


@given(st.dictionaries(st.sampled_from("abcdef"), st.frozensets(st.sampled_from("abcdef")), max_size=6),
       st.lists(st.sampled_from("abcdef"), unique=True, min_size=1))
def test_every_target_is_changed_exactly_once_and_after_its_sources_when_there_is_no_cycle(
        depends: dict[str, frozenset[str]], names: list[str]) -> None:
    groups = waves(names, depends)
    flat = [n for group in groups for n in group]
    assert sorted(flat) == sorted(names)
    position = {n: i for i, group in enumerate(groups) for n in group}
    last = groups[-1]
    cyclic = any(depends.get(n, frozenset()) & set(last) - {n} for n in last)
    if not cyclic:
        for name in names:
            for source in depends.get(name, frozenset()) & set(names) - {name}:
                assert position[source] < position[name]


def test_the_timeline_says_what_happens_now_at_the_date_and_after() -> None:
    staged = PublishedCertificate("pool", CertificateRole.NEXT, "B" * 40, effective="2026-12-01T00:00:00Z",
                                  staged_now=True)
    current = PublishedCertificate("pool", CertificateRole.CURRENT, "A" * 40)
    entries = timeline({"pool": (current, staged)}, {"pool": ["exchange.PartnerApplication.Lync"]},
                       {"pool": [("exchange.PartnerApplication.Lync", ""), ("sp.TrustedSecurityTokenIssuer.Skype",
                                                                            "re-reads on its own schedule")]})
    whens = [e.when for e in entries]
    assert whens == ["now", "2026-12-01T00:00:00Z", "2026-12-01T00:00:00Z", "after 2026-12-01T00:00:00Z"]
    assert "staged by this plan" in entries[0].what and "exchange.PartnerApplication.Lync" in entries[0].what
    assert entries[2].what == "sp.TrustedSecurityTokenIssuer.Skype: re-reads on its own schedule"
    assert timeline({"pool": (current,)}, {}) == ()  # nothing staged: no rotation to show


class _Lookup:
    def __init__(self, *found: PublishedCertificate) -> None:
        self.found = found
        self.problems: list[str] = []

    def __call__(self, source: str) -> tuple[PublishedCertificate, ...]:
        return self.found

    def problem(self, message: str) -> None:
        self.problems.append(message)


def test_a_certificate_whose_public_key_was_not_read_is_a_problem_never_a_silent_gap() -> None:
    from reconciler.providers.office365 import resolve_credentials

    lookup = _Lookup(PublishedCertificate("pool", CertificateRole.NEXT, "C" * 40, der=None))
    fields = resolve_credentials({"keyCredentials": [{"certificateOf": "pool"}], "keyCredentialsAuthoritative": True},
                                 lookup)
    assert fields["keyCredentials"] == []
    assert "keyCredentialsAuthoritative" not in fields  # nothing is removed on an incomplete reference
    assert lookup.problems == [f"the public key of pool's next certificate {'C' * 40} was not read (no RawData in "
                               "its store entry), so it cannot be given to this principal before it signs"]
