"""`reconcile report`: one self-contained HTML page of status, drift, history and the trust graph."""

from __future__ import annotations

import shutil
from html.parser import HTMLParser

import pytest

from tests.e2e import ON_PREMISES, Estate


class Page(HTMLParser):
    """Collects the text and checks tags are balanced (the page is well-formed enough to render)."""

    VOID = frozenset({"meta", "br", "link", "img", "path", "polygon", "ellipse", "polyline"})

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.text: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        assert self.open and self.open[-1] == tag, (tag, self.open[-5:])
        self.open.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def page(estate: Estate) -> tuple[Page, str]:
    run = estate.reconcile("report", ON_PREMISES, "--out", "report.html")
    assert run.code == 0, run.err
    raw = (estate.root / "report.html").read_text(encoding="utf-8")
    parsed = Page()
    parsed.feed(raw)
    parsed.close()
    assert parsed.open == []
    return parsed, raw


def test_report_shows_status_drift_history_and_escapes_what_servers_say(estate: Estate) -> None:
    assert estate.reconcile("drift", ON_PREMISES).code == 2
    estate.lab("fail", "atl-cs-001", "Remove-CsPartnerApplication", "--message", "<script>alert(1)</script> denied")
    assert estate.reconcile("apply", ON_PREMISES, "--auto-approve").code == 1
    parsed, raw = page(estate)
    text = " ".join(parsed.text)
    assert "litware-pool" in text and "Failing" in text and "litware-exchange" in text
    assert "litware-pool.PartnerApplication.app" in text  # the drift of the last run
    assert "#1" in text and "#2" in text and "drift" in text and "apply" in text  # history
    assert "<script>" not in raw and "&lt;script&gt;alert(1)&lt;/script&gt; denied" in raw
    assert "script" not in parsed.tags


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz (dot) is not installed")
def test_report_draws_the_trust_graph_with_graphviz(estate: Estate) -> None:
    parsed, raw = page(estate)
    assert "svg" in parsed.tags and "<pre>" not in raw.split("<h2>Trust graph</h2>")[1].split("<h2>")[0]
    assert "SharePoint" in " ".join(parsed.text)  # the node outside the manifest, by name


def test_report_without_graphviz_shows_the_dot_source(estate: Estate, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(estate.root))  # no `dot` on the PATH
    parsed, _ = page(estate)
    assert "svg" not in parsed.tags and "digraph trust {" in " ".join(parsed.text)
    assert "is not installed here" in " ".join(parsed.text)
