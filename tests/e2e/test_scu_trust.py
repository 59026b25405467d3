"""Trust boundary on the SCU side: only the archive that was asked may make us delete anything.

Forgers are plain pynetdicom AEs over real TCP; "another host" is 127.0.0.2 (all of 127/8 is
loopback), the archive being 127.0.0.1. Each test keeps the files that a forged report would
have deleted, and checks they are still there.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pynetdicom import AE, build_role
from pynetdicom.sop_class import StorageCommitmentPushModel

from stgcmt.config import ConfigError, RemoteAE
from stgcmt.dicom.commitment import CommitmentReport, Reference, build_event_information
from stgcmt.dicom.status import PROCESSING_FAILURE, SUCCESS
from stgcmt.dicom.uids import STORAGE_COMMITMENT_INSTANCE
from stgcmt.scu.agent import Agent
from stgcmt.scu.reports import SECURITY, Reporter, Resolver, ip_literal
from stgcmt.scu.send import EXIT_COMMITTED, EXIT_PENDING, SendOptions, send
from stgcmt.storage.scu_journal import ScuJournal, Transaction

from support.common import LOCALHOST, free_port, remote, wait_for
from support.mounts import read_only_mount

SCU = "CT1"
OTHER_HOST = "127.0.0.2"


@dataclass
class Delivery:
    """What a reporter got: the association's rejection (result, source, reason) or the
    N-EVENT-REPORT status."""

    rejection: tuple[int, int, int] | None = None
    status: int | None = None


def report_from(
    aet: str, port: int, report: CommitmentReport, bind: str = LOCALHOST, called: str = SCU
) -> Delivery:
    """Open a new association as ``aet`` from address ``bind`` and deliver ``report``."""
    ae = AE(aet)
    ae.add_requested_context(StorageCommitmentPushModel)
    role = [build_role(StorageCommitmentPushModel, scp_role=True)]
    assoc = ae.associate(LOCALHOST, port, ae_title=called, ext_neg=role, bind_address=(bind, 0))
    if assoc.is_rejected:
        rj = assoc.acceptor.primitive
        return Delivery(rejection=(int(rj.result), int(rj.result_source), int(rj.diagnostic)))
    assert assoc.is_established
    try:
        status, _ = assoc.send_n_event_report(
            build_event_information(report),
            report.event_type_id,
            StorageCommitmentPushModel,
            STORAGE_COMMITMENT_INSTANCE,
        )
        return Delivery(status=int(status.Status) if "Status" in status else None)
    finally:
        assoc.release()


CALLING_AET_NOT_RECOGNISED = (1, 1, 3)  # rejected-permanent, service user, reason 3


def pending_send(
    archive_factory, instances, journal: ScuJournal, aet: str = "ARCHIVE", host: str = LOCALHOST
) -> tuple[Transaction, list[Path], RemoteAE]:
    """Send files with delete-on-commit to a pynetdicom archive that never reports: the
    transaction stays pending, its files on disk, waiting for a report."""
    _, port = archive_factory(aet=aet, report="never")
    archive = RemoteAE(aet, host, port)
    paths = instances(2)
    opts = SendOptions(aet=SCU, on_commit="delete", timeout=0.2, same_assoc_wait=0)
    result = send(archive, paths, journal, opts)
    assert result.exit_status == EXIT_PENDING
    tx = journal.find(result.transactions[-1].transaction_uid)
    assert tx is not None
    return tx, paths, archive


def all_committed(journal: ScuJournal, tx: Transaction) -> CommitmentReport:
    refs = [Reference(f.sop_class_uid, f.sop_instance_uid) for f in journal.files(tx.id)]
    return CommitmentReport(tx.transaction_uid, committed=refs)


def security_lines(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and r.getMessage().startswith(SECURITY)
    ]


def assert_untouched(journal: ScuJournal, tx: Transaction, paths: list[Path]) -> None:
    assert all(p.exists() for p in paths)
    after = journal.get(tx.id)
    assert after.state == "pending" and after.reported_at is None
    assert {f.state for f in journal.files(tx.id)} == {"pending"}


# -- association time ------------------------------------------------------------------------


def test_forged_report_from_another_ae_title_is_rejected(
    archive_factory, instances, scu_journal, caplog
):
    tx, paths, _ = pending_send(archive_factory, instances, scu_journal)
    caplog.set_level(logging.WARNING, "stgcmt.scu")

    with Agent(scu_journal.path, SCU, LOCALHOST, 0) as agent:
        forged = report_from("FORGER", agent.port, all_committed(scu_journal, tx))

    assert forged.rejection == CALLING_AET_NOT_RECOGNISED
    assert_untouched(scu_journal, tx, paths)
    [line] = security_lines(caplog)
    assert "'FORGER'" in line and LOCALHOST in line and "rejected" in line


def test_forged_report_with_the_archive_ae_title_from_another_host_is_rejected(
    archive_factory, instances, scu_journal, caplog
):
    tx, paths, _ = pending_send(archive_factory, instances, scu_journal)
    caplog.set_level(logging.WARNING, "stgcmt.scu")

    with Agent(scu_journal.path, SCU, LOCALHOST, 0) as agent:
        forged = report_from("ARCHIVE", agent.port, all_committed(scu_journal, tx), OTHER_HOST)

    assert forged.rejection == CALLING_AET_NOT_RECOGNISED
    assert_untouched(scu_journal, tx, paths)
    [line] = security_lines(caplog)
    assert "'ARCHIVE'" in line and OTHER_HOST in line


def test_nothing_pending_means_nobody_may_report(scu_journal, caplog):
    caplog.set_level(logging.WARNING, "stgcmt.scu")
    with Agent(scu_journal.path, SCU, LOCALHOST, 0) as agent:
        forged = report_from("ARCHIVE", agent.port, CommitmentReport("1.2.3.4"))
    assert forged.rejection == CALLING_AET_NOT_RECOGNISED
    assert security_lines(caplog)


# -- genuine reports -------------------------------------------------------------------------


@pytest.mark.parametrize("host", [LOCALHOST, "localhost"])
def test_report_from_the_archive_asked_is_accepted(archive_factory, instances, scu_journal, host):
    """Sent to ARCHIVE@localhost, reported from 127.0.0.1: the same host."""
    tx, paths, _ = pending_send(archive_factory, instances, scu_journal, host=host)

    with Agent(scu_journal.path, SCU, LOCALHOST, 0) as agent:
        genuine = report_from("ARCHIVE", agent.port, all_committed(scu_journal, tx))

    assert genuine == Delivery(status=SUCCESS)
    assert not any(p.exists() for p in paths)
    assert scu_journal.get(tx.id).state == "committed"


def test_repeated_delivery_after_commit_is_still_acknowledged(
    archive_factory, instances, scu_journal
):
    """The archive lost our Success and delivers again: it must not be rejected as a
    stranger now that nothing of its is pending."""
    tx, _, _ = pending_send(archive_factory, instances, scu_journal)
    with Agent(scu_journal.path, SCU, LOCALHOST, 0) as agent:
        report = all_committed(scu_journal, tx)
        assert report_from("ARCHIVE", agent.port, report).status == SUCCESS
        assert report_from("ARCHIVE", agent.port, report).status == SUCCESS


def test_our_scp_reporting_on_a_new_association_to_send_listener(
    scp_factory, instances, scu_journal
):
    listen = free_port()
    scp = scp_factory(remotes=(remote(SCU, listen),), report_assoc="new")
    paths = instances(2)
    opts = SendOptions(aet=SCU, report_assoc="new", listen_port=listen, timeout=10)
    opts.listen_bind, opts.on_commit = LOCALHOST, "delete"

    result = send(RemoteAE("STGCMT_SCP", "localhost", scp.port), paths, scu_journal, opts)

    assert result.exit_status == EXIT_COMMITTED
    assert not any(p.exists() for p in paths)


# -- named reporters -------------------------------------------------------------------------


def test_named_reporter_may_report_for_the_agent(archive_factory, instances, scu_journal):
    tx, paths, _ = pending_send(archive_factory, instances, scu_journal)
    reporters = [Reporter.parse("OTHER@127.0.0.1:104")]  # the port is ignored

    with Agent(scu_journal.path, SCU, LOCALHOST, 0, reporters=reporters) as agent:
        assert report_from("OTHER", agent.port, all_committed(scu_journal, tx)).status == SUCCESS

    assert not any(p.exists() for p in paths)


def test_named_reporter_must_also_come_from_its_host(archive_factory, instances, scu_journal):
    tx, paths, _ = pending_send(archive_factory, instances, scu_journal)
    reporters = [Reporter("OTHER", LOCALHOST)]

    with Agent(scu_journal.path, SCU, LOCALHOST, 0, reporters=reporters) as agent:
        forged = report_from("OTHER", agent.port, all_committed(scu_journal, tx), OTHER_HOST)

    assert forged.rejection == CALLING_AET_NOT_RECOGNISED
    assert_untouched(scu_journal, tx, paths)


@pytest.mark.parametrize("named", [True, False], ids=["named", "not-named"])
def test_send_listener_accepts_a_named_reporter_only(
    archive_factory, instances, scu_journal, named
):
    """The archive reports from another AE title: with --reporter the send run commits,
    without it the report is rejected and the files stay."""
    _, port = archive_factory(report="never")
    paths = instances(2)
    listen = free_port()
    reporters = (Reporter("OTHER", "localhost"),) if named else ()
    opts = SendOptions(
        aet=SCU,
        report_assoc="new",
        listen_port=listen,
        listen_bind=LOCALHOST,
        timeout=3 if named else 1,
        on_commit="delete",
        reporters=reporters,
    )
    deliveries: list[Delivery] = []

    def report_once_pending() -> None:
        tx = wait_for(lambda: next(iter(scu_journal.in_state("pending")), None), 10)
        assert tx is not None
        deliveries.append(report_from("OTHER", listen, all_committed(scu_journal, tx)))

    reporter = threading.Thread(target=report_once_pending)
    reporter.start()
    result = send(remote("ARCHIVE", port), paths, scu_journal, opts)
    reporter.join(15)

    if named:
        assert deliveries == [Delivery(status=SUCCESS)]
        assert result.exit_status == EXIT_COMMITTED
        assert not any(p.exists() for p in paths)
    else:
        assert deliveries == [Delivery(rejection=CALLING_AET_NOT_RECOGNISED)]
        assert result.exit_status == EXIT_PENDING
        assert all(p.exists() for p in paths)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("OTHER@pacs2", Reporter("OTHER", "pacs2")),
        ("OTHER@pacs2:11112", Reporter("OTHER", "pacs2")),
        ("OTHER@[::1]:104", Reporter("OTHER", "::1")),
        ("OTHER@::1", Reporter("OTHER", "::1")),
    ],
)
def test_reporter_is_written_aet_at_host(text, expected):
    assert Reporter.parse(text) == expected


@pytest.mark.parametrize("text", ["OTHER", "@pacs", "OTHER@", "OTHER@pacs:x", "A" * 17 + "@h"])
def test_reporter_without_a_host_is_refused(text):
    with pytest.raises(ConfigError):
        Reporter.parse(text)


def test_addresses_compare_by_value_and_names_resolve():
    resolver = Resolver()
    assert resolver.same_host("localhost", "127.0.0.1")
    assert resolver.same_host("127.0.0.1", "::ffff:127.0.0.1")  # IPv4 on a dual-stack socket
    assert not resolver.same_host("localhost", OTHER_HOST)
    assert not resolver.same_host("no-such-host.invalid", "127.0.0.1")
    assert ip_literal("pacs") is None and ip_literal("::FFFF:10.0.0.1") == "10.0.0.1"


# -- report time -----------------------------------------------------------------------------


def test_archive_cannot_report_for_a_transaction_sent_to_another(
    archive_factory, instances, scu_journal, caplog
):
    tx_a, paths_a, _ = pending_send(archive_factory, instances, scu_journal, aet="ARCHIVE_A")
    tx_b, paths_b, _ = pending_send(archive_factory, instances, scu_journal, aet="ARCHIVE_B")
    caplog.set_level(logging.WARNING, "stgcmt.scu")

    with Agent(scu_journal.path, SCU, LOCALHOST, 0) as agent:
        forged = report_from("ARCHIVE_A", agent.port, all_committed(scu_journal, tx_b))

    assert forged == Delivery(status=PROCESSING_FAILURE)
    assert_untouched(scu_journal, tx_b, paths_b)
    assert scu_journal.get(tx_a.id).state == "pending"
    [line] = security_lines(caplog)
    assert "'ARCHIVE_A'" in line and tx_b.transaction_uid in line and "ARCHIVE_B@" in line


def test_sending_association_cannot_report_for_another_archive(
    archive_factory, instances, scu_journal, caplog
):
    """Archive B, on the association we opened to it, reports archive A's transaction."""
    tx_a, paths_a, _ = pending_send(archive_factory, instances, scu_journal, aet="ARCHIVE_A")
    archive_b, port_b = archive_factory(
        aet="ARCHIVE_B", report="same", transaction_uid=tx_a.transaction_uid
    )
    caplog.set_level(logging.WARNING, "stgcmt.scu")
    opts = SendOptions(aet=SCU, report_assoc="same", timeout=1, on_commit="delete")

    send(RemoteAE("ARCHIVE_B", LOCALHOST, port_b), instances(1), scu_journal, opts)

    assert archive_b.wait_answers(1) == [PROCESSING_FAILURE]
    assert_untouched(scu_journal, tx_a, paths_a)
    assert any(tx_a.transaction_uid in line for line in security_lines(caplog))


# -- journals from before the archive was recorded -------------------------------------------

OLD_TRANSACTIONS = """
CREATE TABLE transactions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, transaction_uid TEXT NOT NULL UNIQUE,
    local_aet TEXT NOT NULL, archive TEXT NOT NULL, on_commit TEXT NOT NULL, move_dir TEXT,
    state TEXT NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL,
    requested_at REAL, reported_at REAL, report_via TEXT, n_files INTEGER NOT NULL,
    n_committed INTEGER, n_failed INTEGER, last_error TEXT
)"""


def test_old_journal_gains_the_archive_columns_and_keeps_its_pending_transaction(tmp_path):
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute(OLD_TRANSACTIONS)
        conn.execute(
            "INSERT INTO transactions (transaction_uid, local_aet, archive, on_commit, state,"
            " created_at, updated_at, n_files) VALUES"
            " ('1.2.3.7', 'CT1', 'ARCHIVE@localhost:104', 'delete', 'pending', 0, 0, 0)"
        )
    conn.close()

    journal = ScuJournal(path)
    try:
        tx = journal.find("1.2.3.7")
        assert tx is not None
        assert (tx.archive_aet, tx.archive_host, tx.archive_port) == ("ARCHIVE", "localhost", 104)
        with Agent(path, SCU, LOCALHOST, 0) as agent:
            assert report_from("ARCHIVE", agent.port, CommitmentReport("1.2.3.7")).status == 0
            refused = report_from("FORGER", agent.port, CommitmentReport("1.2.3.7"))
            assert refused.rejection == CALLING_AET_NOT_RECOGNISED
    finally:
        journal.close()
    ScuJournal(path).close()  # a migrated journal opens again


# -- start-up: a journal we cannot write ------------------------------------------------------


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory on a read-only tmpfs holding a valid journal ``j.sqlite``: root ignores
    permission bits, a read-only mount it does not."""

    def journal_in(folder: Path) -> None:
        ScuJournal(folder / "j.sqlite").close()

    with read_only_mount(tmp_path / "ro", journal_in) as folder:
        yield folder


def stgcmt(*args: str | Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "stgcmt", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("name", ["j.sqlite", "new/j.sqlite"], ids=["existing", "new-dir"])
def test_send_refuses_an_unwritable_journal_before_sending(
    archive_factory, instances, read_only_dir, name
):
    archive, port = archive_factory(report="same")
    paths = instances(1)
    journal = read_only_dir / name

    run = stgcmt("send", f"ARCHIVE@{LOCALHOST}:{port}", *paths, "--journal", journal, "--json")

    assert run.returncode == 3, run.stderr
    assert str(journal if name == "j.sqlite" else journal.parent) in run.stderr
    assert "not writable" in run.stderr
    assert json.loads(run.stdout)["exit_status"] == 3
    assert archive.stored == [] and all(p.exists() for p in paths)


def test_agent_refuses_an_unwritable_journal(read_only_dir):
    port = free_port()
    journal = read_only_dir / "j.sqlite"

    run = stgcmt("agent", "--aet", SCU, "--bind", LOCALHOST, "--port", port, "--journal", journal)

    assert run.returncode == 3
    assert f"{journal} is not writable" in run.stderr
