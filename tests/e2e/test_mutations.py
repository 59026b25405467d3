"""Documented, safety-relevant behaviour that a one-line change to the code once broke without
any test noticing. Each test asserts what a user would check: statuses, Failure Reasons and
rejections on the wire, files kept or deleted (and their SHA-256) on disk, exit statuses."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TypeVar

import pytest
from pydicom import dcmread
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel

import stgcmt.storage.fsync as fsync_module
from stgcmt import ul as net
from stgcmt.config import RemoteAE, RetryPolicy, TlsConfig
from stgcmt.dicom.commitment import (
    CommitmentRequest,
    Reference,
    build_action_information,
    build_event_information,
)
from stgcmt.dicom.status import (
    PROCESSING_FAILURE,
    RESOURCE_LIMITATION,
)
from stgcmt.dicom.uids import (
    STORAGE_COMMITMENT_INSTANCE,
    STORAGE_COMMITMENT_PUSH_MODEL,
    VERIFICATION,
)
from stgcmt.events import AssociationRejected, ReportFailed, ReportGivenUp, SecurityAlert
from stgcmt.scu.send import EXIT_FAILED, EXIT_PENDING, SendOptions, send
from stgcmt.storage.queries import SqliteScpQueries

from support.common import (
    LOCALHOST,
    PYTHON,
    SECONDARY_CAPTURE,
    free_port,
    remote,
    wait_for,
)
from support.mounts import fill_up
from support.pynetdicom_archive import STORAGE_CLASSES, Archive
from support.pynetdicom_peer import Modality, refs_of, report_content
from support.scu import uids
from support.tls_certs import CertificateAuthority
from support.tls_peer import tls_report_listener

REPORT_WAIT = 15
SCU = "CT1"


@pytest.fixture
def modality():
    peer = Modality("MODALITY")
    yield peer
    peer.stop()


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def options(**overrides) -> SendOptions:
    values = {"aet": SCU, "listen_bind": LOCALHOST, "timeout": 10.0}
    return SendOptions(**(values | overrides))


# -- 1. a failed durability barrier is never reported committed --------------------------------


@pytest.mark.parametrize(
    "code, reason",
    [(errno.EIO, PROCESSING_FAILURE), (errno.ENOSPC, RESOURCE_LIMITATION)],
    ids=["EIO-0110", "ENOSPC-0213"],
)
def test_failed_fsync_is_reported_failed_never_committed(
    scp_factory, modality, instances, monkeypatch, code, reason
):
    # fsync, not syncfs: the disk's answer is patched into fsync_path. Failing from before the
    # C-STOREs on, so that the background durability round cannot make them durable first.
    scp = scp_factory(remotes=(remote("MODALITY", modality.listen()),), durability="fsync")
    paths = instances(2)
    calls: list[str] = []

    def failing_fsync(path):  # the disk answers the barrier's fsync with an error
        calls.append(str(path))
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(fsync_module, "fsync_path", failing_fsync)
    assert modality.store(scp.port, paths) == [0, 0]
    assert modality.commit(scp.port, refs_of(paths), "1.2.3.900") == 0
    assert modality.wait_report(REPORT_WAIT)
    event_type, information, _ = modality.reports[0]
    committed, failed = report_content(information)
    assert calls, "the barrier never called fsync"
    assert event_type == 2
    assert committed == set()
    assert failed == {p.stem: reason for p in paths}

    monkeypatch.undo()
    _failed_until_sent_again(scp.port, modality, paths, "1.2.3.901")


def _failed_until_sent_again(port: int, modality, paths, transaction_uid: str) -> None:
    """Storage is back, but a sync that succeeds now proves nothing about the pages whose
    write-back failed: the same instances still fail (0110H) until they are sent again (the
    same bytes, no --overwrite-duplicates), then they commit."""
    reports = len(modality.reports)
    assert modality.commit(port, refs_of(paths), transaction_uid + ".1") == 0
    assert modality.wait_report(REPORT_WAIT, count=reports + 1)
    event_type, information, _ = modality.reports[reports]
    assert event_type == 2
    assert report_content(information) == (set(), {p.stem: PROCESSING_FAILURE for p in paths})
    assert modality.store(port, paths) == [0] * len(paths)
    assert modality.commit(port, refs_of(paths), transaction_uid + ".2") == 0
    assert modality.wait_report(REPORT_WAIT, count=reports + 2)
    event_type, information, _ = modality.reports[reports + 1]
    assert event_type == 1
    assert report_content(information) == ({p.stem for p in paths}, {})


@pytest.fixture
def eio_instances(tmp_path):
    """A FUSE file system (tests/support/eio_fs.py) mounted at the SCP's ``instances/``: its
    fsync fails with a real EIO from the kernel while the returned arming file exists."""
    if not Path("/dev/fuse").exists() and os.geteuid() != 0:
        pytest.skip("no /dev/fuse (needs root)")
    data_dir = tmp_path / "eio-data"
    mountpoint = data_dir / "instances"
    mountpoint.mkdir(parents=True)
    arm = tmp_path / "fsync-fails"
    script = Path(__file__).parents[1] / "support" / "eio_fs.py"
    proc = subprocess.Popen(
        [PYTHON, str(script), str(mountpoint), str(arm)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if line != "mounted" or not os.path.ismount(mountpoint):
            pytest.fail(f"cannot mount the EIO file system: {line} {proc.stdout.read()}")
        yield data_dir, arm
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if os.path.ismount(mountpoint):
            subprocess.run(["fusermount", "-uz", str(mountpoint)], check=False)


def test_fsync_eio_from_the_disk_fails_the_commitment_with_0110(
    eio_instances, scp_factory, modality, instances
):
    """A real I/O error: the kernel answers the barrier's fsync with EIO."""
    data_dir, arm = eio_instances
    scp = scp_factory(remotes=(remote("MODALITY", modality.listen()),), data_dir=data_dir)
    paths = instances(2)
    arm.touch()  # before the C-STOREs: the background durability round fails on them too
    assert modality.store(scp.port, paths) == [0, 0]  # writes and renames still work
    assert modality.commit(scp.port, refs_of(paths), "1.2.3.902") == 0
    assert modality.wait_report(REPORT_WAIT)
    event_type, information, _ = modality.reports[0]
    assert event_type == 2
    assert report_content(information) == (set(), {p.stem: PROCESSING_FAILURE for p in paths})

    arm.unlink()  # the disk recovers
    _failed_until_sent_again(scp.port, modality, paths, "1.2.3.903")


# -- 2. the SCU keeps a file that changed after it was sent ------------------------------------


def test_file_with_new_mtime_and_content_but_same_size_is_kept(scp_factory, instances, scu_journal):
    scp = scp_factory(accept_unknown=True)  # reports on the sending association
    paths = instances(2)
    changed = paths[0]
    original = changed.read_bytes()

    def rewrite_after_last_store(done: int, total: int) -> None:
        if done == total:  # sent: now someone rewrites it, same size, other bytes and mtime
            data = original.replace(b"Test^Patient", b"Test^Pxtient")
            assert data != original and len(data) == len(original)
            before = changed.stat()
            changed.write_bytes(data)
            os.utime(changed, ns=(before.st_atime_ns, before.st_mtime_ns + 5_000_000_000))

    opts = options(on_commit="delete")
    result = send(
        remote("STGCMT_SCP", scp.port), paths, scu_journal, opts, rewrite_after_last_store
    )

    assert [tx.state for tx in result.transactions] == ["committed"]
    assert changed.exists(), "a file that changed after it was sent was deleted"
    assert changed.read_bytes() == original.replace(b"Test^Patient", b"Test^Pxtient")
    assert not paths[1].exists()  # the unchanged one was deleted
    notes = {f.path: f.action_note for f in result.transactions[0].files}
    assert notes[str(changed)] == "kept: the file changed after it was sent"


# -- 3. TLS clients verify the server's certificate ---------------------------------------------


@pytest.fixture(scope="module")
def two_cas(tmp_path_factory):
    trusted = CertificateAuthority(tmp_path_factory.mktemp("trusted"), "trusted CA")
    other = CertificateAuthority(tmp_path_factory.mktemp("other"), "other CA")
    return trusted, other


def test_send_to_tls_archive_with_certificate_from_another_ca_fails(
    scp_factory, instances, scu_journal, two_cas
):
    trusted, other = two_cas
    archive = other.issue("archive")  # the archive's certificate is not from our CA
    modality_creds = trusted.issue("modality")
    scp = scp_factory(
        remotes=(remote(SCU, free_port()),),
        tls=TlsConfig(archive.cert, archive.key, other.cert),
    )
    paths = instances(2)
    opts = options(
        on_commit="delete",
        timeout=5,
        tls=TlsConfig(modality_creds.cert, modality_creds.key, trusted.cert),
    )
    with pytest.raises(net.AssociationError, match="TLS handshake .*certificate verify failed"):
        send(remote("STGCMT_SCP", scp.port), paths, scu_journal, opts)
    assert all(p.exists() for p in paths)
    assert scp.store.count() == 0  # nothing was sent to the impostor


def _tls_client(ca_cert: Path, creds) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(str(ca_cert))
    context.load_cert_chain(str(creds.cert), str(creds.key))
    return context


def test_scp_report_to_tls_listener_with_untrusted_certificate_fails(scp_factory, two_cas):
    trusted, other = two_cas
    archive = trusted.issue("archive")
    impostor = other.issue("listener")  # the report target's certificate: not from our CA
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(str(impostor.cert), str(impostor.key))
    modality = Modality("MODALITY")
    listener = tls_report_listener(modality, server_context)
    try:
        scp = scp_factory(
            remotes=(remote("MODALITY", listener.server_address[1]),),
            tls=TlsConfig(archive.cert, archive.key, trusted.cert),
        )
        requester = AE("MODALITY")
        requester.add_requested_context(STORAGE_COMMITMENT_PUSH_MODEL)
        assoc = requester.associate(
            LOCALHOST,
            scp.port,
            ae_title="STGCMT_SCP",
            tls_args=(_tls_client(trusted.cert, trusted.issue("modality")), None),
        )
        assert assoc.is_established
        information = build_action_information(
            CommitmentRequest("1.2.3.910", [Reference(SECONDARY_CAPTURE, generate_uid())])
        )
        status, _ = assoc.send_n_action(
            information, 1, STORAGE_COMMITMENT_PUSH_MODEL, STORAGE_COMMITMENT_INSTANCE
        )
        assoc.release()
        assert status.Status == 0

        def failed_twice():
            rows = SqliteScpQueries(scp.config.data_dir).transactions()
            return rows and rows[0]["attempts"] >= 2 and rows[0]

        row = wait_for(failed_twice, REPORT_WAIT)
        assert row, "the report association was never attempted twice"
        assert row["state"] == "report_pending"
        assert "certificate verify failed" in row["last_error"]
        assert modality.reports == []  # the untrusted listener never got the report
    finally:
        listener.shutdown()


# -- 4. exit statuses: 1 wins over 2; a refused N-ACTION is a failure --------------------------


class ReportsFirstOnly(Archive):
    """Reports the first N-ACTION only; the others stay without a report."""

    def _on_action(self, event):
        if self.requests:
            self.requests.append(event.action_information)
            return 0x0000, None
        return super()._on_action(event)


def test_some_failed_and_some_pending_exits_1(instances, scu_journal):
    paths = [p for _ in range(2) for p in instances(2, study=generate_uid())]
    archive = ReportsFirstOnly(report="same", lose=uids(paths))
    port = archive.start()
    try:
        opts = options(on_commit="delete", group_by="study", timeout=1.5, same_assoc_wait=1.5)
        result = send(remote("ARCHIVE", port), paths, scu_journal, opts)
        assert archive.wait_answers(1) == [0]
    finally:
        archive.stop()
    assert sorted(tx.state for tx in result.transactions) == ["failed", "pending"]
    assert result.exit_status == EXIT_FAILED
    assert all(p.exists() for p in paths)


def _stgcmt(*args: str | Path, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "XDG_STATE_HOME": str(home / "state")}
    return subprocess.run(
        [sys.executable, "-m", "stgcmt", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_refused_n_action_exits_1_not_pending(scp_factory, instances, tmp_path):
    scp = scp_factory(accept_unknown=True, max_references=1)  # two files: refused 0x0213
    paths = instances(2)
    run = _stgcmt(
        "send",
        f"STGCMT_SCP@{LOCALHOST}:{scp.port}",
        paths[0].parent,
        "--aet",
        SCU,
        "--journal",
        tmp_path / "j.sqlite",
        "--delete-committed",
        "--timeout",
        "3",
        home=tmp_path,
    )
    assert run.returncode == EXIT_FAILED, run.stdout + run.stderr
    assert "0x0213" in run.stdout + run.stderr
    assert all(p.exists() for p in paths)


# -- 5. the retry delay doubles up to the cap ---------------------------------------------------


class DownReportTarget:
    """Accepts TCP connections and closes them at once (the peer's DICOM service is down),
    noting when each delivery attempt arrived."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind((LOCALHOST, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.times: list[float] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.times.append(time.monotonic())
            conn.close()

    def close(self) -> None:
        self.sock.close()


def test_retry_delay_doubles_up_to_the_cap(scp_factory, modality):
    target = DownReportTarget()
    try:
        scp = scp_factory(
            remotes=(remote("MODALITY", target.port),),
            retry=RetryPolicy(start=0.2, cap=2.0, give_up_after=3600),
        )
        refs = [Reference(SECONDARY_CAPTURE, generate_uid())]
        assert modality.commit(scp.port, refs, "1.2.3.920") == 0
        assert wait_for(lambda: len(target.times) >= 6, 20), target.times
    finally:
        target.close()
    gaps = [b - a for a, b in zip(target.times, target.times[1:6], strict=False)]
    expected = [0.2, 0.4, 0.8, 1.6, 2.0]
    for gap, want in zip(gaps, expected, strict=True):
        # Never early (the timer cannot fire before the delay); late by scheduling at most.
        assert want * 0.9 - 0.02 <= gap <= want * 1.25 + 0.3, (gaps, expected)


# -- 6. max_references: N accepted, N + 1 refused ------------------------------------------------


def _information(transaction_uid: str, count: int) -> Dataset:
    refs = [Reference(SECONDARY_CAPTURE, generate_uid()) for _ in range(count)]
    return build_action_information(CommitmentRequest(transaction_uid, refs))


def test_max_references_boundary(scp_factory, modality):
    scp = scp_factory(remotes=(remote("MODALITY", free_port()),), max_references=10)
    assert modality.n_action(scp.port, _information("1.2.3.930", 10)) == 0x0000
    assert modality.n_action(scp.port, _information("1.2.3.931", 11)) == RESOURCE_LIMITATION
    rows = SqliteScpQueries(scp.config.data_dir).transactions()
    assert [row["transaction_uid"] for row in rows] == ["1.2.3.930"]


# -- 7. 0x0131 only while the earlier transaction is active ---------------------------------------


def test_transaction_uid_reused_after_delivery_commits_normally(scp_factory, modality, instances):
    scp = scp_factory(remotes=(remote("MODALITY", modality.listen()),))
    paths = instances(2)
    assert modality.store(scp.port, paths) == [0, 0]
    assert modality.commit(scp.port, refs_of(paths), "1.2.3.940") == 0
    assert modality.wait_report(REPORT_WAIT)
    assert scp.wait_delivered("1.2.3.940", 5).state == "delivered"

    assert modality.commit(scp.port, refs_of(paths), "1.2.3.940") == 0
    assert modality.wait_report(REPORT_WAIT, count=2)
    event_type, information, _ = modality.reports[1]
    assert information.TransactionUID == "1.2.3.940"
    assert event_type == 1
    assert report_content(information) == ({p.stem for p in paths}, {})


# -- 8. undecodable Action Information: 0x0212 ---------------------------------------------------


def _truncated_item() -> tuple[Dataset, str]:
    """A Referenced SOP Sequence whose only item claims 100 bytes and holds 4 (written as it
    is: pydicom copies a raw OB value verbatim)."""
    information = Dataset()
    information.TransactionUID = "1.2.3.950"
    garbage = b"\xfe\xff\x00\xe0" + (100).to_bytes(4, "little") + b"\x08\x00\x50\x11"
    information[0x00081199] = RawDataElement(
        Tag(0x00081199), "OB", len(garbage), garbage, 0, True, True
    )
    return information, ImplicitVRLittleEndian


def _sequence_as_text() -> tuple[Dataset, str]:
    """Explicit VR: the Referenced SOP Sequence arrives with VR UI, a string, not items."""
    information = Dataset()
    information.TransactionUID = "1.2.3.950"
    information.add(DataElement(0x00081199, "UI", "1.2.3"))
    return information, ExplicitVRLittleEndian


@pytest.mark.parametrize("build", [_truncated_item, _sequence_as_text], ids=lambda b: b.__name__)
def test_undecodable_action_information_gets_mistyped_argument(scp_factory, modality, build):
    scp = scp_factory(remotes=(remote("MODALITY", free_port()),))
    information, syntax = build()
    ae = AE("MODALITY")
    ae.add_requested_context(STORAGE_COMMITMENT_PUSH_MODEL, [syntax])
    assoc = ae.associate(LOCALHOST, scp.port, ae_title="STGCMT_SCP")
    assert assoc.is_established
    try:
        status, _ = assoc.send_n_action(
            information, 1, STORAGE_COMMITMENT_PUSH_MODEL, STORAGE_COMMITMENT_INSTANCE
        )
    finally:
        assoc.release()
    assert status.Status == 0x0212  # mistyped argument, not 0x0115 invalid argument value
    assert SqliteScpQueries(scp.config.data_dir).transactions() == []
    assert modality.n_action(scp.port, _information("1.2.3.951", 1)) == 0  # still serving


# -- 9. the SCU refuses Event Type ID 3 -----------------------------------------------------------


class EventType3(Archive):
    """Reports every N-ACTION, on its association, as Event Type ID 3 (which does not exist)."""

    def _send_report(self, requesting, request: Dataset) -> None:
        time.sleep(self.report_delay)
        report = self._report_for(request)
        status, _ = requesting.send_n_event_report(
            build_event_information(report),
            3,
            StorageCommitmentPushModel,
            STORAGE_COMMITMENT_INSTANCE,
        )
        with self._answered:
            self.answers.append(int(status.Status) if "Status" in status else None)
            self._answered.notify_all()


def test_scu_refuses_event_type_3_and_deletes_nothing(instances, scu_journal):
    archive = EventType3(report="same")
    port = archive.start()
    paths = instances(2)
    try:
        opts = options(on_commit="delete", timeout=1.5, same_assoc_wait=1.5)
        result = send(remote("ARCHIVE", port), paths, scu_journal, opts)
        assert archive.wait_answers(1) == [PROCESSING_FAILURE]
    finally:
        archive.stop()
    assert all(p.exists() for p in paths)
    assert result.exit_status == EXIT_PENDING
    assert [tx.state for tx in result.transactions] == ["pending"]


# -- 10. --overwrite-duplicates replaces the stored copy ------------------------------------------


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((LOCALHOST, port)) == 0


class ScpProcess:
    """``stgcmt scp`` as users run it; stopped with SIGTERM."""

    def __init__(self, tmp_path: Path, *args: str, data_dir: Path | None = None) -> None:
        self.port = free_port()
        self.data_dir = data_dir or tmp_path / f"proc-data-{self.port}"
        self.log = tmp_path / f"scp-{self.port}.log"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    PYTHON,
                    "-m",
                    "stgcmt",
                    "scp",
                    "--bind",
                    LOCALHOST,
                    "--port",
                    str(self.port),
                    "--data-dir",
                    str(self.data_dir),
                    "--retry-start",
                    "0.2",
                    *args,
                ],
                stdout=log,
                stderr=log,
            )
        started = wait_for(lambda: _listening(self.port) or self.proc.poll() is not None, 20)
        if not started or self.proc.poll() is not None:
            self.stop()
            pytest.fail("SCP did not start:\n" + self.log.read_text())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture
def scp_process(tmp_path):
    started: list[ScpProcess] = []

    def start(*args: str, data_dir: Path | None = None) -> ScpProcess:
        process = ScpProcess(tmp_path, *args, data_dir=data_dir)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def _store_changed_copy(modality: Modality, port: int, path: Path) -> None:
    """Store a changed copy of ``path`` (another Patient ID) under the same SOP Instance UID."""
    ds = dcmread(path)
    ds.PatientID = "CHANGED"
    ds.save_as(path)
    assert modality.store(port, [path]) == [0]


def _stored_file(data_dir: Path, uid: str, other_than: str | None = None) -> tuple[Path, str]:
    """The stored file and SHA-256 the index holds for ``uid`` (optionally: once it holds
    another SHA-256 than ``other_than``). Index rows reach the database in batches a moment
    after the C-STORE is answered, so this waits (10 s at most)."""

    def indexed():
        row = SqliteScpQueries(data_dir).instance(uid)
        return row if row is not None and row["sha256"] != other_than else None

    row = wait_for(indexed, 10)
    assert row, f"no index row for {uid}" + (f" other than {other_than}" if other_than else "")
    return data_dir / row["path"], row["sha256"]


def test_overwrite_duplicates_replaces_the_stored_copy(scp_process, modality, instances):
    listen = modality.listen()
    scp = scp_process("--overwrite-duplicates", "--remote", f"MODALITY@{LOCALHOST}:{listen}")
    [path] = instances(1)
    assert modality.store(scp.port, [path]) == [0]
    stored, _ = _stored_file(scp.data_dir, path.stem)
    first_sha = sha256_file(stored)
    _store_changed_copy(modality, scp.port, path)

    stored, index_sha = _stored_file(scp.data_dir, path.stem, other_than=first_sha)
    assert dcmread(stored).PatientID == "CHANGED"
    assert sha256_file(stored) != first_sha
    assert index_sha == sha256_file(stored)  # the index vouches for the new copy
    assert modality.commit(scp.port, refs_of([path]), "1.2.3.960") == 0
    assert modality.wait_report(REPORT_WAIT)
    assert report_content(modality.reports[0][1]) == ({path.stem}, {})  # checksum verified
    assert sha256_file(stored) == index_sha


def test_without_overwrite_duplicates_the_first_copy_is_kept(scp_factory, modality, instances):
    scp = scp_factory(remotes=(remote("MODALITY", modality.listen()),))
    [path] = instances(1)
    assert modality.store(scp.port, [path]) == [0]
    stored, first_sha = _stored_file(scp.config.data_dir, path.stem)
    assert sha256_file(stored) == first_sha
    _store_changed_copy(modality, scp.port, path)

    assert modality.commit(scp.port, refs_of([path]), "1.2.3.961") == 0
    assert modality.wait_report(REPORT_WAIT)  # the barrier has flushed every index row by now
    assert report_content(modality.reports[0][1]) == ({path.stem}, {})
    stored, index_sha = _stored_file(scp.config.data_dir, path.stem)
    assert (sha256_file(stored), index_sha) == (first_sha, first_sha)
    assert dcmread(stored).PatientID == "PAT001"


# -- 11. --any-host / check_host = false ---------------------------------------------------------


def _associate_from(port: int, source: str, aet: str = "MODALITY"):
    ae = AE(aet)
    ae.add_requested_context(VERIFICATION)
    return ae.associate(LOCALHOST, port, ae_title="STGCMT_SCP", bind_address=(source, 0))


@pytest.mark.parametrize("check_host", [False, True], ids=["check_host-false", "default"])
def test_check_host_decides_whether_another_address_may_associate(scp_factory, check_host):
    scp = scp_factory(
        remotes=(RemoteAE("MODALITY", LOCALHOST, free_port()),), check_host=check_host
    )
    assoc = _associate_from(scp.port, "127.0.0.2")
    try:
        if check_host:
            assert assoc.is_rejected
            assert assoc.acceptor.primitive.diagnostic == 0x03
        else:
            assert assoc.is_established
            assert assoc.send_c_echo().Status == 0
    finally:
        if assoc.is_established:
            assoc.release()
    home = _associate_from(scp.port, LOCALHOST)  # from its configured host: always
    assert home.is_established
    home.release()


def test_any_host_flag_lets_a_known_ae_associate_from_another_address(scp_process):
    relaxed = scp_process("--any-host", "--remote", f"MODALITY@{LOCALHOST}:{free_port()}")
    strict = scp_process("--remote", f"MODALITY@{LOCALHOST}:{free_port()}")
    assoc = _associate_from(relaxed.port, "127.0.0.2")
    assert assoc.is_established
    assoc.release()
    assoc = _associate_from(strict.port, "127.0.0.2")
    assert assoc.is_rejected
    assert assoc.acceptor.primitive.diagnostic == 0x03
    stranger = _associate_from(relaxed.port, "127.0.0.2", aet="STRANGER")
    assert stranger.is_rejected  # --any-host relaxes the host, not who is known


# -- 12. what `send --json` prints: every field a script reads, and why each file is kept ----------


class RefusesOneStore(Archive):
    """Answers C-STORE 0xA700 (out of resources) for ``refused``; reports the rest on the
    requesting association, ``lose`` as failed (0112H)."""

    refused: str = ""

    def _on_store(self, event) -> int:
        if str(event.request.AffectedSOPInstanceUID) == self.refused:
            return 0xA700
        return super()._on_store(event)


MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
FILE_FIELDS = {"path", "sop_instance_uid", "state", "reason", "action", "action_note"}


def _send_json(port: int, *args: str | Path, home: Path) -> tuple[int, dict]:
    run = _stgcmt("send", f"ARCHIVE@{LOCALHOST}:{port}", *args, "--aet", SCU, "--json", home=home)
    return run.returncode, json.loads(run.stdout)


def test_send_json_names_each_field_and_why_each_file_was_kept(instances, tmp_path):
    stored_failed, lost, committed = instances(3)
    [not_accepted] = instances(1, sop_class=MR_IMAGE)  # the archive takes no MR images
    not_dicom = committed.parent / "notes.txt"
    not_dicom.write_text("not DICOM")
    archive = RefusesOneStore(report="same", lose={lost.stem})
    archive.refused = stored_failed.stem
    port = archive.start()
    journal = tmp_path / "j.sqlite"
    try:
        status, result = _send_json(
            port, committed.parent, "--journal", journal, "--delete-committed", home=tmp_path
        )
    finally:
        archive.stop()

    assert status == EXIT_FAILED
    assert set(result) == {
        "exit_status", "error", "journal", "files_by_state", "actions", "notes",
        "transactions", "skipped",
    }  # fmt: skip
    assert (result["exit_status"], result["error"], result["journal"]) == (1, None, str(journal))
    assert result["files_by_state"] == {"store_failed": 2, "failed": 1, "committed": 1}
    assert result["actions"] == {"done": 1}
    assert result["skipped"] == [{"path": str(not_dicom), "reason": "not a DICOM Part 10 file"}]
    [tx] = result["transactions"]
    assert set(tx) == {"transaction_uid", "journal_id", "state", "files", "error"}
    assert (tx["state"], tx["journal_id"]) == ("failed", 1)
    files = {f["path"]: f for f in tx["files"]}
    assert all(set(f) == FILE_FIELDS for f in tx["files"])
    refused = files.pop(str(not_accepted))
    assert refused["state"] == "store_failed"
    assert refused["reason"] == (
        f"C-STORE failed: ARCHIVE@{LOCALHOST}:{port} rejected the presentation context"
        f" MR Image Storage ({MR_IMAGE}) in Explicit VR Little Endian (1.2.840.10008.1.2.1)"
        " or Implicit VR Little Endian (1.2.840.10008.1.2)"
    )
    assert {p: (f["state"], f["reason"], f["action"]) for p, f in files.items()} == {
        str(stored_failed): ("store_failed", "C-STORE failed: 0xA700 out of resources", None),
        str(lost): ("failed", "Failure Reason 0x0112 no such object instance", None),
        str(committed): ("committed", None, "done"),
    }
    assert files[str(committed)]["sop_instance_uid"] == committed.stem
    assert not committed.exists() and stored_failed.exists() and lost.exists()


def test_send_json_says_no_report_yet_and_aborted_exactly(instances, tmp_path):
    paths = instances(2)
    archive = Archive(report="never")
    port = archive.start()
    try:
        status, result = _send_json(port, *paths, "--timeout", "0.3", home=tmp_path)
    finally:
        archive.stop()
    assert status == EXIT_PENDING
    assert [f["reason"] for f in result["transactions"][0]["files"]] == ["no report yet"] * 2

    status, result = _send_json(free_port(), *paths, home=tmp_path)  # nobody listens there
    [tx] = result["transactions"]
    assert status == 3 and tx["state"] == "aborted" and tx["error"]
    assert [f["reason"] for f in tx["files"]] == [f"aborted: {tx['error']}"] * 2


class LeavesOneOut(Archive):
    """Reports every file but ``left_out``: in neither the committed nor the failed list."""

    left_out: str = ""

    def _report_for(self, request: Dataset):
        report = super()._report_for(request)
        report.committed = [r for r in report.committed if r.sop_instance_uid != self.left_out]
        return report


class RefusesNAction(Archive):
    """Answers every N-ACTION 0x0213 (resource limitation): no report will come."""

    def _on_action(self, event) -> tuple[int, None]:
        return RESOURCE_LIMITATION, None


class StorageOnly(Archive):
    """Storage only: the Storage Commitment context is rejected."""

    def start(self) -> int:
        ae = AE(self.aet)
        for uid in STORAGE_CLASSES:
            ae.add_supported_context(uid, list(self.transfer_syntaxes))
        self._server = ae.start_server(
            (LOCALHOST, 0), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)]
        )
        return self._server.server_address[1]


def _reasons_from(archive: Archive, paths: list[Path], home: Path) -> tuple[dict, dict[str, str]]:
    """``send --json`` to ``archive``: its one transaction, and each file's reason by path."""
    port = archive.start()
    try:
        _, result = _send_json(port, *paths, "--timeout", "5", home=home)
    finally:
        archive.stop()
    [tx] = result["transactions"]
    return tx, {f["path"]: f["reason"] for f in tx["files"]}


def test_send_json_says_why_a_reported_or_refused_file_is_not_committed(instances, tmp_path):
    left_out, committed = instances(2)
    archive = LeavesOneOut(report="same")
    archive.left_out = left_out.stem
    _, reasons = _reasons_from(archive, [left_out, committed], tmp_path)
    assert reasons == {str(left_out): "not in the report", str(committed): None}

    tx, reasons = _reasons_from(RefusesNAction(report="same"), [committed], tmp_path)
    assert (tx["state"], tx["error"]) == ("failed", "N-ACTION refused: 0x0213 resource limitation")
    assert reasons == {str(committed): "Failure Reason 0x0213 resource limitation"}

    _, reasons = _reasons_from(StorageOnly(report="same"), [committed], tmp_path)
    assert reasons == {
        str(committed): "the archive does not support Storage Commitment (no report)"
    }


# -- 13. a transaction being verified says so (what status shows after a crash there) ------------


@pytest.mark.parametrize("point", ["scp.verify.mid", "scp.barrier.after_fsync"])
def test_a_crash_during_verification_leaves_it_verifying_and_a_restart_reports(
    scp_process, modality, instances, monkeypatch, point
):
    monkeypatch.setenv("STGCMT_CRASH_POINTS", point)  # SIGKILL there, once verifying
    remote_arg = f"MODALITY@{LOCALHOST}:{modality.listen()}"
    scp = scp_process("--remote", remote_arg)
    paths = instances(2)
    assert modality.store(scp.port, paths) == [0, 0]
    for path in paths:  # an index row still in the writer's batch would die with the process
        _stored_file(scp.data_dir, path.stem)  # (then 0112H after the restart: also correct)
    modality.commit(scp.port, refs_of(paths), "1.2.3.980")  # the answer may not leave any more
    assert scp.proc.wait(timeout=20) == -9
    [row] = SqliteScpQueries(scp.data_dir).transactions()
    assert (row["transaction_uid"], row["state"]) == ("1.2.3.980", "verifying")
    assert modality.reports == []

    monkeypatch.delenv("STGCMT_CRASH_POINTS")
    scp_process("--remote", remote_arg, data_dir=scp.data_dir)  # verifies it again
    assert modality.wait_report(REPORT_WAIT)
    event_type, information, _ = modality.reports[0]
    assert (event_type, information.TransactionUID) == (1, "1.2.3.980")
    assert report_content(information) == ({p.stem for p in paths}, {})


# -- 14. every refused association says why, in the event the audit trail and the API get -------


def _rejections(scp) -> list:
    seen: list = []
    scp.events.subscribe(lambda event: seen.append(event))
    return seen


def _details(seen: list) -> list[tuple[str, str]]:
    return [(e.reason, e.detail) for e in seen if isinstance(e, AssociationRejected)]


def _try(port: int, aet: str = "MODALITY", called: str = "STGCMT_SCP"):
    ae = AE(aet)
    ae.add_requested_context(VERIFICATION)
    return ae.associate(LOCALHOST, port, ae_title=called)


def test_each_rejected_association_says_why_and_what_to_do(scp_factory):
    known = RemoteAE("MODALITY", "127.0.0.3", free_port())  # configured elsewhere: we are not
    scp = scp_factory(remotes=(known, remote("CT2", free_port())), max_associations=1)
    seen = _rejections(scp)
    assert _try(scp.port, called="OTHER").is_rejected
    assert _try(scp.port, aet="STRANGER").is_rejected
    assert _try(scp.port).is_rejected
    holding = _try(scp.port, aet="CT2")
    assert holding.is_established
    try:
        assert _try(scp.port, aet="CT2").is_rejected  # one association at a time
    finally:
        holding.release()
    assert _details(seen) == [
        ("called-aet", "called AE 'OTHER' is not ours ('STGCMT_SCP')"),
        (
            "calling-aet",
            "calling AE 'STRANGER' is not a known peer"
            " (add --remote STRANGER@HOST:PORT, or --accept-unknown)",
        ),
        (
            "calling-aet",
            f"AE 'MODALITY' is configured at 127.0.0.3, not {LOCALHOST}"
            " (add it to the peer's extra_hosts, or set check_host = false)",
        ),
        ("congestion", "1 associations already open (limit 1)"),
    ]
    alerts = [e.detail for e in seen if isinstance(e, SecurityAlert)]
    assert alerts == [detail for _, detail in _details(seen)[:3]]  # not for a busy archive


def test_a_crash_after_the_background_durability_sync_loses_nothing(
    scp_process, modality, instances, monkeypatch
):
    monkeypatch.setenv("STGCMT_CRASH_POINTS", "scp.durability.after_sync")
    remote_arg = f"MODALITY@{LOCALHOST}:{modality.listen()}"
    scp = scp_process("--remote", remote_arg)
    [path] = instances(1)
    assert modality.store(scp.port, [path]) == [0]
    assert scp.proc.wait(timeout=20) == -9  # the round after the C-STORE synced it, then died

    monkeypatch.delenv("STGCMT_CRASH_POINTS")
    again = scp_process("--remote", remote_arg, data_dir=scp.data_dir)
    assert modality.commit(again.port, refs_of([path]), "1.2.3.990") == 0
    assert modality.wait_report(REPORT_WAIT)
    assert report_content(modality.reports[0][1]) == ({path.stem}, {})


# -- 15. the delivery history: every attempt, on which association, why it failed, what next ----


E = TypeVar("E")


def _scp_for_an_absent_modality(scp_factory, retry: RetryPolicy):
    """An SCP whose one peer, MODALITY, does not listen on its port (yet); and that port."""
    port = free_port()
    return scp_factory(remotes=(remote("MODALITY", port),), retry=retry), port


def _seen(scp, kind: type[E]) -> list[E]:
    """The events of ``kind`` the SCP emits from now on."""
    seen: list[E] = []
    scp.events.subscribe(lambda e: isinstance(e, kind) and seen.append(e))
    return seen


def _store_and_commit(modality: Modality, scp, paths: list[Path], transaction_uid: str) -> None:
    assert modality.store(scp.port, paths) == [0] * len(paths)
    assert modality.commit(scp.port, refs_of(paths), transaction_uid) == 0


def test_each_delivery_attempt_is_kept_with_its_route_outcome_error_and_next_time(
    scp_factory, modality, instances
):
    scp, port = _scp_for_an_absent_modality(scp_factory, RetryPolicy(1.0, 1.0, 3600))
    failures = _seen(scp, ReportFailed)
    _store_and_commit(modality, scp, instances(1), "1.2.3.990")  # nobody listens yet
    assert wait_for(lambda: scp.journal.get(1).attempts >= 1, 10)
    modality.listen(port)
    assert modality.wait_report(REPORT_WAIT)
    assert scp.wait_delivered("1.2.3.990", 5).state == "delivered"

    failed, *_, delivered = scp.journal.attempts(1)
    assert (failed.via, failed.outcome) == ("new", "failed")
    assert failed.error and f"{LOCALHOST}:{port}" in failed.error, failed.error
    assert failed.next_attempt_at is not None
    assert failed.at + 0.9 <= failed.next_attempt_at <= failed.at + 1.5
    # what the metrics and the dashboard are told of that attempt
    told = failures[0]
    assert (told.calling_aet, told.transaction_uid) == ("MODALITY", "1.2.3.990")
    assert (told.error, told.next_attempt_at) == (failed.error, failed.next_attempt_at)
    assert (delivered.via, delivered.outcome, delivered.error) == ("new", "delivered", None)
    assert delivered.next_attempt_at is None


# -- 16. which association a report takes: `same` never opens one, `auto` falls back at once ------


def test_same_mode_never_opens_an_association_even_to_a_known_listening_peer(
    scp_factory, modality, instances
):
    scp = scp_factory(remotes=(remote("MODALITY", modality.listen()),), report_assoc="same")
    paths = instances(1)
    assert modality.store(scp.port, paths) == [0]
    assert modality.commit(scp.port, refs_of(paths), "1.2.3.991") == 0  # released at once
    assert not modality.wait_report(3.0), "a report came on an association the SCP opened"
    assert scp.journal.get(1).state == "report_pending"
    # the modality's next association (any) brings it
    assert (
        modality.commit(scp.port, refs_of(paths), "1.2.3.992", wait_same=REPORT_WAIT, reports=2)
        == 0
    )
    assert [how for _, _, how in modality.reports] == ["same", "same"]


class HangsUpOnTheReport(Modality):
    """Aborts its own (requesting) association when the first report arrives on it, before
    answering: the association closes under the report. Later reports, and reports on new
    associations, are answered as usual."""

    hung_up = False

    def _on_report(self, event) -> tuple[int, None]:
        if event.assoc.is_requestor and not self.hung_up:
            self.hung_up = True
            threading.Thread(target=event.assoc.abort, daemon=True).start()
            time.sleep(2.0)
            return PROCESSING_FAILURE, None  # never sent: the association is gone
        return super()._on_report(event)


def test_auto_mode_falls_back_at_once_when_the_association_closes_under_the_report(
    scp_factory, instances
):
    modality = HangsUpOnTheReport("MODALITY")
    try:
        scp = scp_factory(
            remotes=(remote("MODALITY", modality.listen()),),
            report_assoc="auto",
            retry=RetryPolicy(start=60.0, cap=60.0, give_up_after=3600),  # a retry is too late
        )
        paths = instances(1)
        assert modality.store(scp.port, paths) == [0]
        modality.commit(scp.port, refs_of(paths), "1.2.3.993", wait_same=REPORT_WAIT)
        assert modality.wait_report(REPORT_WAIT)
        assert [how for _, _, how in modality.reports] == ["new"]
        tx = scp.wait_delivered("1.2.3.993", 5)
        assert tx is not None and tx.delivered_via.startswith("a new association")
        history = [(a.via, a.outcome) for a in scp.journal.attempts(1)]
        assert history == [("new", "delivered")], "not at once: after a failed attempt"
    finally:
        modality.stop()


def test_auto_mode_retries_a_report_to_an_ae_without_address_on_its_next_association(
    scp_factory, instances
):
    modality = HangsUpOnTheReport("MODALITY")
    scp = scp_factory(  # an unknown AE: no address to open an association to
        accept_unknown=True,
        report_assoc="auto",
        retry=RetryPolicy(start=0.5, cap=0.5, give_up_after=3600),
    )
    paths = instances(1)
    assert modality.store(scp.port, paths) == [0]
    modality.commit(scp.port, refs_of(paths), "1.2.3.994", wait_same=REPORT_WAIT)  # hangs up
    assert not modality.reports and scp.journal.get(1).state == "report_pending"
    status = modality.commit(
        scp.port, refs_of(paths), "1.2.3.995", wait_same=REPORT_WAIT, reports=2
    )
    assert status == 0
    assert sorted(info.TransactionUID for _, info, _ in modality.reports) == [
        "1.2.3.994",
        "1.2.3.995",
    ]
    assert [how for _, _, how in modality.reports] == ["same", "same"]


def test_same_mode_counts_a_report_the_association_closed_under_as_a_failed_attempt(
    scp_factory, instances
):
    modality = HangsUpOnTheReport("MODALITY")
    scp = scp_factory(remotes=(remote("MODALITY", free_port()),), report_assoc="same")
    paths = instances(1)
    assert modality.store(scp.port, paths) == [0]
    modality.commit(scp.port, refs_of(paths), "1.2.3.996", wait_same=REPORT_WAIT)
    assert wait_for(lambda: scp.journal.attempts(1), 10)
    [attempt] = scp.journal.attempts(1)
    assert (attempt.via, attempt.outcome) == ("same", "failed")
    assert scp.journal.get(1).state == "report_pending"


# -- 17. giving up says after how long, how many attempts and the last error ---------------------


def test_giving_up_records_and_announces_age_attempts_and_last_error(
    scp_factory, modality, instances
):
    scp, port = _scp_for_an_absent_modality(scp_factory, RetryPolicy(0.1, 0.2, 1.0))
    given_up = _seen(scp, ReportGivenUp)
    _store_and_commit(modality, scp, instances(1), "1.2.3.997")
    tx = scp.wait_delivered("1.2.3.997", 10)
    assert tx is not None and tx.state == "given_up"
    match = re.fullmatch(
        r"gave up after (\d+) s and (\d+) attempts \(last error: (.+)\)", tx.last_error
    )
    assert match, tx.last_error
    assert int(match[1]) >= 1 and int(match[2]) == tx.attempts >= 4
    assert f"{LOCALHOST}:{port}" in match[3]
    assert wait_for(lambda: given_up, 5)
    assert [(e.calling_aet, e.transaction_uid, e.error) for e in given_up] == [
        ("MODALITY", "1.2.3.997", tx.last_error)
    ]


def test_giving_up_before_any_attempt_says_there_was_no_error(scp_factory, modality, instances):
    """The archive was down longer than give_up_after: the report is given up unsent."""
    scp, _ = _scp_for_an_absent_modality(scp_factory, RetryPolicy(0.1, 0.2, 0.001))
    _store_and_commit(modality, scp, instances(1), "1.2.3.998")
    tx = scp.wait_delivered("1.2.3.998", 10)
    assert tx is not None and tx.state == "given_up"
    assert re.fullmatch(r"gave up after 0 s and 0 attempts \(last error: none\)", tx.last_error)


# -- 18. attempts the journal could not record still lengthen the retry schedule ----------------


def test_attempts_made_while_the_journal_was_full_count_after_it_recovers(
    scp_factory, modality, instances, small_disk
):
    target = DownReportTarget()
    try:
        scp = scp_factory(
            remotes=(remote("MODALITY", target.port),),
            data_dir=small_disk / "data",
            retry=RetryPolicy(start=0.2, cap=3.2, give_up_after=3600),
        )
        _store_and_commit(modality, scp, instances(1), "1.2.3.999")
        assert wait_for(lambda: scp.journal.get(1).attempts >= 1, 10)
        fill_up(small_disk / "filler")
        # the next attempts fail and cannot be recorded: 0.4, 0.8, 1.6 s apart in memory
        assert wait_for(lambda: len(target.times) >= 4, 10), target.times
        assert scp.journal.get(1).attempts == 1, "the disk did not fill up"
        (small_disk / "filler").unlink()
        recorded: list = []  # the first attempt the journal records again (it may be the one
        # in flight when the disk was freed: its history row can be lost, its count is not)
        assert wait_for(lambda: _second_attempt(scp.journal.get(1), recorded), 10)
    finally:
        target.close()
    [tx] = recorded
    assert tx.next_attempt_at is not None
    # 1 recorded + the unrecorded ones + this one (>= 4: 1.6 s or the 3.2 s cap), not the
    # second step of the schedule (0.4 s) as if nothing had been tried meanwhile
    assert tx.next_attempt_at - tx.updated_at >= 1.5, (tx, target.times)


def _second_attempt(tx, recorded: list) -> bool:
    if tx.attempts < 2:
        return False
    recorded.append(tx)
    return True
