"""``stgcmt.scu.send.send`` end to end over real sockets: against our SCP and a pynetdicom
archive."""

from __future__ import annotations

import logging
import re

import pytest
from pydicom.uid import generate_uid

from stgcmt import ul as net
from stgcmt.config import Timeouts
from stgcmt.dicom.status import NO_SUCH_OBJECT_INSTANCE, PROCESSING_FAILURE, describe_status
from stgcmt.scu.send import EXIT_COMMITTED, EXIT_FAILED, EXIT_PENDING, SendOptions, UsageError, send

from support.common import LOCALHOST, free_port, make_dataset, remote, wait_for, write_instances
from support.scu import uids

SCU = "CT1"


def options(**overrides) -> SendOptions:
    """Fast, bounded defaults for tests: listener (if any) on 127.0.0.1."""
    values = {"aet": SCU, "listen_bind": LOCALHOST, "timeout": 10.0}
    return SendOptions(**(values | overrides))


def scp_reporting_to(scp_factory, port: int | None, **overrides):
    """Our SCP, knowing our SCU at ``port`` (None: an unknown AE, answered on its association)."""
    if port is None:
        return scp_factory(accept_unknown=True, **overrides)
    return scp_factory(remotes=(remote(SCU, port),), **overrides)


# -- against our own SCP ----------------------------------------------------------------------


def test_report_on_new_association_deletes_committed_files(scp_factory, instances, scu_journal):
    listen = free_port()
    scp = scp_reporting_to(scp_factory, listen, report_assoc="new")
    paths = instances(3)
    opts = options(report_assoc="new", listen_port=listen, on_commit="delete")

    result = send(remote("STGCMT_SCP", scp.port), paths, scu_journal, opts)

    assert result.exit_status == EXIT_COMMITTED
    assert [tx.state for tx in result.transactions] == ["committed"]
    assert not any(p.exists() for p in paths)
    assert "new association" in scu_journal.get(1).report_via


def test_report_on_same_association_without_listener(scp_factory, instances, scu_journal):
    scp = scp_reporting_to(scp_factory, None)
    paths = instances(2)

    result = send(remote("STGCMT_SCP", scp.port), paths, scu_journal, options(report_assoc="same"))

    assert result.exit_status == EXIT_COMMITTED
    assert all(p.exists() for p in paths)  # no action requested: kept
    assert scu_journal.get(1).report_via.startswith("same association")


def test_per_study_n_actions_share_one_association_with_reports_on_it(
    scp_factory, instances, scu_journal, caplog
):
    """Three transactions, one association: every C-STORE and all three N-ACTIONs go on the
    same association (one request at a time), and the SCP reports each on it."""
    caplog.set_level(logging.INFO, "stgcmt.scp")
    scp = scp_reporting_to(scp_factory, free_port(), report_assoc="same")
    paths = [p for _ in range(3) for p in instances(2, study=generate_uid())]
    opts = options(report_assoc="same", group_by="study", on_commit="delete")

    result = send(remote("STGCMT_SCP", scp.port), paths, scu_journal, opts)

    assert result.exit_status == EXIT_COMMITTED
    assert [tx.state for tx in result.transactions] == ["committed"] * 3
    assert not any(p.exists() for p in paths)
    assert all(scu_journal.get(n).report_via.startswith("same association") for n in (1, 2, 3))
    for tx in result.transactions:  # the SCP logs a delivery once it has recorded it
        assert scp.wait_delivered(tx.transaction_uid, 5) is not None

    def settled() -> bool:  # the delivery line follows the journal's record of it
        lines = [r.getMessage() for r in caplog.records]
        delivered = sum(" delivered to " in m for m in lines)
        return delivered == 3 and any("closed: " in m for m in lines)

    assert wait_for(settled, 5)
    messages = [r.getMessage() for r in caplog.records if r.name == "stgcmt.scp"]
    requesters = {m.split()[2].rstrip(":") for m in messages if m.startswith("N-ACTION from ")}
    reported_on = {
        re.search(r"on the association (\S+) opened", m).group(1)
        for m in messages
        if " delivered to " in m
    }
    closed = [m for m in messages if m.startswith("association from ")]
    assert sum(m.startswith("N-ACTION from ") for m in messages) == 3
    assert len(requesters) == 1, requesters
    assert reported_on == requesters
    assert sum(" delivered to " in m for m in messages) == 3
    assert len(closed) == 1 and closed[0].endswith("6 stored"), closed


def test_lost_instances_are_reported_failed_and_kept(scp_factory, instances, scu_journal):
    """The archive answers C-STORE success, then loses two instances before the N-ACTION."""
    scp = scp_reporting_to(scp_factory, None)
    paths = instances(4)
    lost = paths[:2]

    def lose_after_last_store(done: int, total: int) -> None:
        if done == total:
            for uid in uids(lost):
                scp.store.path_for(uid).unlink()
                scp.store.index.remove(uid)

    opts = options(on_commit="delete")
    result = send(remote("STGCMT_SCP", scp.port), paths, scu_journal, opts, lose_after_last_store)

    assert result.exit_status == EXIT_FAILED
    assert all(p.exists() for p in lost)
    assert not any(p.exists() for p in paths[2:])
    failed = {f.path: f.reason for f in result.transactions[0].files if f.state == "failed"}
    assert set(failed) == {str(p) for p in lost}
    assert all(describe_status(NO_SUCH_OBJECT_INSTANCE) in reason for reason in failed.values())


def test_split_by_max_refs_and_series(scp_factory, instances, tmp_path, scu_journal):
    scp = scp_reporting_to(scp_factory, None)
    series_a = write_instances(tmp_path / "in" / "a", 3, series="1.2.3.1")
    series_b = write_instances(tmp_path / "in" / "b", 2, series="1.2.3.2")
    opts = options(group_by="series", max_refs=2, on_commit="move", move_dir=tmp_path / "done")

    result = send(remote("STGCMT_SCP", scp.port), [tmp_path / "in"], scu_journal, opts)

    assert result.exit_status == EXIT_COMMITTED
    assert sorted(len(tx.files) for tx in result.transactions) == [1, 2, 2]
    assert len({tx.transaction_uid for tx in result.transactions}) == 3
    moved = sorted(
        p.relative_to(tmp_path / "done").as_posix() for p in (tmp_path / "done").rglob("*")
    )
    expected = sorted(f"{p.parent.name}/{p.name}" for p in series_a + series_b)
    assert [m for m in moved if m.endswith(".dcm")] == expected


def test_more_than_128_contexts_use_several_associations(
    scp_factory, tmp_path, scu_journal, caplog
):
    """130 SOP Classes need more presentation contexts than one association may carry: the
    archive sees several storage associations, and every instance arrives and commits."""
    caplog.set_level(logging.INFO, "stgcmt.scp")
    scp = scp_reporting_to(scp_factory, None)
    classes = sorted(net.STORAGE_SOP_CLASSES)[:130]
    folder = tmp_path / "many"
    folder.mkdir()
    for n, sop_class in enumerate(classes):
        make_dataset(sop_class).save_as(folder / f"{n}.dcm", enforce_file_format=True)

    result = send(remote("STGCMT_SCP", scp.port), [folder], scu_journal, options())

    assert result.exit_status == EXIT_COMMITTED
    assert result.counts() == {"committed": 130}

    def stored_per_association() -> list[int]:
        pattern = re.compile(r"association from .* closed: (\d+) stored")
        lines = (pattern.search(r.getMessage()) for r in caplog.records)
        return [int(m.group(1)) for m in lines if m]

    assert wait_for(lambda: sum(stored_per_association()) == 130, 5)
    assert len(stored_per_association()) >= 2


def test_non_dicom_files_are_skipped_with_a_warning(scp_factory, instances, scu_journal, caplog):
    scp = scp_reporting_to(scp_factory, None)
    paths = instances(2)
    junk = paths[0].parent / "notes.txt"
    junk.write_text("not DICOM")

    result = send(remote("STGCMT_SCP", scp.port), [paths[0].parent], scu_journal, options())

    assert result.exit_status == EXIT_COMMITTED
    assert [s.path for s in result.skipped] == [junk]
    assert f"skipped {junk}: not a DICOM Part 10 file" in caplog.text
    assert junk.exists()


def test_archive_down_raises_and_deletes_nothing(instances, scu_journal):
    paths = instances(2)
    opts = options(on_commit="delete")
    with pytest.raises(net.AssociationError, match="cannot connect"):
        send(remote("STGCMT_SCP", free_port()), paths, scu_journal, opts)
    assert all(p.exists() for p in paths)
    assert scu_journal.get(1).state == "aborted"


def test_report_assoc_new_needs_a_listener(instances, scu_journal):
    with pytest.raises(UsageError, match="--listen"):
        send(remote("X", 1), instances(1), scu_journal, options(report_assoc="new"))


def test_timeout_leaves_the_transaction_pending(archive_factory, instances, scu_journal):
    archive, port = archive_factory(report="never")
    paths = instances(2)
    opts = options(on_commit="delete", timeout=0.3)

    result = send(remote("ARCHIVE", port), paths, scu_journal, opts)

    assert result.exit_status == EXIT_PENDING
    assert all(p.exists() for p in paths)
    assert [f.state for f in result.transactions[0].files] == ["pending", "pending"]


# -- against a plain pynetdicom archive -------------------------------------------------------


@pytest.mark.parametrize("role_item", [True, False], ids=["scp-role-item", "no-role-item"])
def test_pynetdicom_report_on_new_association(archive_factory, instances, scu_journal, role_item):
    listen = free_port()
    archive, port = archive_factory(report="new", report_to=(SCU, listen), role_item=role_item)
    paths = instances(2)
    opts = options(report_assoc="new", listen_port=listen, on_commit="delete")

    result = send(remote("ARCHIVE", port), paths, scu_journal, opts)

    assert result.exit_status == EXIT_COMMITTED
    assert archive.wait_answers(1) == [0]
    assert not any(p.exists() for p in paths)


def test_pynetdicom_failures_on_same_association(archive_factory, instances, scu_journal):
    paths = instances(3)
    archive, port = archive_factory(report="same", lose=uids(paths[:1]))

    result = send(remote("ARCHIVE", port), paths, scu_journal, options(on_commit="delete"))

    assert result.exit_status == EXIT_FAILED
    assert archive.wait_answers(1) == [0]
    assert [p.exists() for p in paths] == [True, False, False]


def test_unknown_transaction_uid_gets_a_failure_and_nothing_happens(
    archive_factory, instances, scu_journal
):
    paths = instances(2)
    archive, port = archive_factory(report="same", transaction_uid="1.2.3.4.5")
    opts = options(on_commit="delete", timeout=1, same_assoc_wait=1)

    result = send(remote("ARCHIVE", port), paths, scu_journal, opts)

    assert archive.wait_answers(1) == [PROCESSING_FAILURE]
    assert result.exit_status == EXIT_PENDING
    assert all(p.exists() for p in paths)


def test_lost_c_store_response_is_resent_on_a_new_association(
    archive_factory, instances, scu_journal
):
    paths = instances(3)
    stalled = uids(paths[1:2])
    archive, port = archive_factory(report="same", stall_once=set(stalled), stall=1.5)
    opts = options(timeouts=Timeouts(dimse=0.5))

    result = send(remote("ARCHIVE", port), paths, scu_journal, opts)

    assert result.exit_status == EXIT_COMMITTED
    assert wait_for(lambda: archive.stored.count(next(iter(stalled))) == 2, 5)
