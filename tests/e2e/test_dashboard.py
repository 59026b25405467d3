"""The web dashboard in a real headless browser (Debian's Chromium driven by Playwright; no
browser is ever downloaded) against our SCP with real DICOM traffic: sign in with the token,
the overview's counts after a store + commit, a transaction's references and Failure Reasons,
the retry button delivering a report the modality receives, and a search. Screenshots go to
$STGCMT_SCREENSHOTS (the README's are refreshed with ``STGCMT_SCREENSHOTS=docs ./test.sh
tests/e2e/test_dashboard.py``), else to a temporary folder: a test run never changes the tree.
Last, 500 C-STOREs from DCMTK's storescu while the dashboard polls every second (what that
costs is a bench figure, not a timed test)."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from stgcmt.config import RetryPolicy
from stgcmt.dicom.commitment import Reference
from stgcmt.storage import fsync as fsync_module
from stgcmt.storage.scu_journal import ScuJournal

from support.browser import chromium, sign_in
from support.common import (
    LOCALHOST,
    SECONDARY_CAPTURE,
    ensure_debian_package,
    free_port,
    remote,
    wait_for,
    write_instances,
)
from support.http import TOKEN, agent_with_http, scp_with_http
from support.pynetdicom_peer import Modality, refs_of
from support.scu import pending_transaction

DOCS = Path(os.environ.get("STGCMT_SCREENSHOTS") or tempfile.mkdtemp(prefix="stgcmt-shots-"))
WAIT_MS = 15_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    ensure_debian_package("chromium", "chromium")
    with chromium() as browser:
        yield browser


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A tab; a script error on any page it showed fails the test."""
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, f"script errors in the dashboard: {errors}"


@pytest.fixture
def modality():
    peer = Modality("MODALITY")
    yield peer
    peer.stop()


def test_overview_transaction_and_search(tmp_path, page, modality):
    paths = write_instances(tmp_path / "out", 3, patient_id="PAT-DASH")
    missing = Reference(SECONDARY_CAPTURE, "1.2.3.999.1")
    with scp_with_http(tmp_path / "scp", remotes=(remote("MODALITY", modality.listen()),)) as (
        scp,
        web,
    ):
        assert modality.store(scp.port, paths) == [0, 0, 0]
        assert modality.commit(scp.port, [*refs_of(paths), missing], "1.2.3.30") == 0
        tx = scp.wait_delivered("1.2.3.30", 15)
        assert tx is not None

        sign_in(page, web.port, TOKEN)
        expect(page.locator("#count-delivered .n")).to_have_text("1")
        expect(page.locator("#count-report_pending .n")).to_have_text("0")
        expect(page.locator("#count-instances .n")).to_have_text("3")
        expect(page.locator("#count-unsafe .n")).to_have_text("0")
        expect(page.locator("#count-unsafe")).not_to_have_class(re.compile("alert"))
        expect(page.locator("#peers")).to_contain_text("MODALITY")
        expect(page.locator(".chart svg rect.bar").first).to_be_attached()
        page.screenshot(path=str(DOCS / "dashboard-overview.png"), full_page=True)

        page.goto(f"http://{LOCALHOST}:{web.port}/#/tx/{tx.id}")
        references = page.locator("#references")
        for path in paths:
            expect(references).to_contain_text(path.stem)
        expect(references).to_contain_text("0x0112 no such object instance")
        expect(references).to_contain_text("PAT-DASH")
        expect(page.locator("#tx-state")).to_have_text("delivered")
        expect(page.locator("dl.fields")).to_contain_text("Transaction UID1.2.3.30")
        expect(page.locator("main")).not_to_contain_text("[object")
        page.screenshot(path=str(DOCS / "dashboard-transaction.png"), full_page=True)

        page.goto(f"http://{LOCALHOST}:{web.port}/#/transactions")
        page.fill("#filters input[name=patient_id]", "PAT-DASH")
        page.click("#filters button[type=submit]")
        expect(page.locator("#transactions")).to_contain_text("1.2.3.30")
        page.fill("#filters input[name=patient_id]", "NOBODY")
        page.click("#filters button[type=submit]")
        expect(page.locator("main h2")).to_have_text("Transactions (0)")


def _failing_fsync(path) -> None:  # the disk answers the barrier's fsync with an error
    raise OSError(errno.EIO, os.strerror(errno.EIO), str(path))


def test_unsafe_copies_are_highlighted_and_listed(tmp_path, page, modality, monkeypatch):
    """The barrier's fsync fails with EIO (fsync, not syncfs: the disk's answer is patched into
    fsync_path): the overview's unsafe count stands out and leads to those instances."""
    lost, kept = write_instances(tmp_path / "lost", 2), write_instances(tmp_path / "kept", 1)
    with scp_with_http(tmp_path / "scp", accept_unknown=True, durability="fsync") as (scp, web):
        monkeypatch.setattr(fsync_module, "fsync_path", _failing_fsync)
        assert modality.store(scp.port, lost) == [0, 0]
        unsafe = wait_for(lambda: scp.queries.status(0)["instances_unsafe"] == 2, 15)
        assert unsafe, "the failed sync did not make the copies unsafe"
        monkeypatch.undo()
        assert modality.store(scp.port, kept) == [0]

        sign_in(page, web.port, TOKEN)
        expect(page.locator("#count-unsafe .n")).to_have_text("2")
        expect(page.locator("#count-unsafe")).to_have_class(re.compile("alert"))
        page.click("#count-unsafe")
        expect(page.locator("main h2").first).to_have_text("Instances (2)")  # (overview: 3)
        expect(page.locator("#search select[name=unsafe]")).to_have_value("true")
        for path in lost:
            expect(page.locator("#instances")).to_contain_text(path.stem)
        expect(page.locator("#instances")).not_to_contain_text(kept[0].stem)
        page.select_option("#search select[name=unsafe]", "false")
        page.click("#search button[type=submit]")
        expect(page.locator("main h2")).to_have_text("Instances (1)")
        expect(page.locator("#instances")).to_contain_text(kept[0].stem)


def test_retry_button_delivers_the_report(tmp_path, page):
    """The modality's listener is down at first: the report waits 10 minutes for its next
    attempt, until the button is pressed."""
    port = free_port()
    modality = Modality("MODALITY")
    try:
        slow = RetryPolicy(start=600, cap=600, give_up_after=3600)
        with scp_with_http(tmp_path / "scp", remotes=(remote("MODALITY", port),), retry=slow) as (
            scp,
            web,
        ):
            paths = write_instances(tmp_path / "out", 2)
            assert modality.store(scp.port, paths) == [0, 0]
            assert modality.commit(scp.port, refs_of(paths), "1.2.3.31") == 0
            tried = wait_for(
                lambda: [t for t in scp.journal.in_state("report_pending") if t.attempts], 15
            )
            assert tried, "the first delivery attempt did not fail"
            (tx,) = tried

            sign_in(page, web.port, TOKEN, "?poll=1")
            expect(page.locator("#count-report_pending .n")).to_have_text("1")
            page.goto(f"http://{LOCALHOST}:{web.port}/?poll=1#/tx/{tx.id}")
            expect(page.locator("#tx-state")).to_have_text("report pending")
            expect(page.locator("#attempts")).to_contain_text("cannot connect")
            modality.listen(port)
            assert not modality.reports
            page.click("#action-retry")
            assert modality.wait_report(15)
            expect(page.locator("#tx-state")).to_have_text("delivered")
            page.screenshot(path=str(DOCS / "dashboard-retry.png"), full_page=True)
    finally:
        modality.stop()


def test_agent_dashboard_shows_a_pending_transaction(tmp_path, page):
    journal = ScuJournal(tmp_path / "scu.sqlite")
    try:
        files = pending_transaction(journal, tmp_path / "out", 2)
    finally:
        journal.close()
    with agent_with_http(tmp_path / "scu.sqlite", "CT1") as (_, web):
        sign_in(page, web.port, TOKEN)
        expect(page.locator("#count-pending .n")).to_have_text("1")
        expect(page.locator("#peers")).to_contain_text("ARCHIVE@127.0.0.1:104")
        page.goto(f"http://{LOCALHOST}:{web.port}/#/tx/1")
        expect(page.locator("#tx-state")).to_have_text("pending")
        for f in files:
            expect(page.locator("#references")).to_contain_text(f.sop_instance_uid)
        expect(page.locator("#action-request-commitment")).to_be_visible()
        page.screenshot(path=str(DOCS / "dashboard-agent.png"), full_page=True)


def test_wrong_token_is_refused_in_the_browser(tmp_path, page):
    with scp_with_http(tmp_path / "scp") as (_, web):
        sign_in(page, web.port, "not-the-token")
        expect(page.locator("#login-error")).to_contain_text("refused")
        expect(page.locator("#login")).to_be_visible()


def _storescu(port: int, folder: Path) -> None:
    """Send every file of ``folder`` on one association with DCMTK's storescu."""
    storescu = ensure_debian_package("storescu", "dcmtk")
    done = subprocess.run(
        [
            storescu,
            "-aet",
            "MODALITY",
            "-aec",
            "STGCMT_SCP",
            "+sd",
            LOCALHOST,
            str(port),
            str(folder),
        ],
        env={**os.environ, "TCP_NODELAY": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_ingest_while_the_dashboard_polls_every_second(tmp_path, browser):
    """500 small C-STOREs while a browser shows the overview, polling status, peers and
    timeline every second: every one stored, and the page follows the count. How much the
    polling costs ingest is a figure of ``python -m bench`` (README "Benchmarks"), not of a
    timed test."""
    write_instances(tmp_path / "first", 20)
    write_instances(tmp_path / "watched", 500)
    with scp_with_http(tmp_path / "scp", accept_unknown=True) as (scp, web):
        _storescu(scp.port, tmp_path / "first")
        page = browser.new_context().new_page()
        sign_in(page, web.port, TOKEN, "?poll=1")
        expect(page.locator("#count-instances .n")).to_have_text("20")
        _storescu(scp.port, tmp_path / "watched")
        expect(page.locator("#count-instances .n")).to_have_text("520")
        assert scp.store.count() == 520
