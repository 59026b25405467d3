"""The audit trail of a real ``stgcmt scp`` process, received by Debian's rsyslogd: one store
and commit over UDP and over TLS, a rejected association, and a collector that is down or
never reads, which must not slow a C-STORE down."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import AE

from stgcmt.dicom.commitment import CommitmentReport
from stgcmt.dicom.status import PROCESSING_FAILURE
from stgcmt.storage.scu_journal import ScuJournal

from support.common import (
    CT_IMAGE,
    LOCALHOST,
    PYTHON,
    SECONDARY_CAPTURE,
    ensure_debian_package,
    free_port,
    wait_for,
    write_instances,
)
from support.pynetdicom_archive import Archive
from support.pynetdicom_peer import Modality, refs_of
from support.rsyslog import CollectorTls, Received, Rsyslog, free_udp_port
from support.scp_process import ScpProcess
from support.scu import pending_transaction
from support.tls_certs import CertificateAuthority

APPLICATION_ACTIVITY, BEGIN, TRANSFERRED, SECURITY_ALERT = "110100", "110102", "110104", "110113"
STUDY = "1.2.826.0.1.3680043.10.1000.1"


@pytest.fixture
def modality() -> Iterator[Modality]:
    peer = Modality("MODALITY", called="ARCHIVE")
    yield peer
    peer.stop()


@pytest.fixture
def processes() -> Iterator[list[ScpProcess]]:
    started: list[ScpProcess] = []
    yield started
    for scp in started:
        if scp.proc is not None and scp.proc.poll() is None:
            scp.kill()


def archive(tmp_path: Path, processes, report_port: int, *extra: str) -> ScpProcess:
    args = [
        "--aet", "ARCHIVE", "--bind", LOCALHOST, "--port", str(free_port()),
        "--data-dir", str(tmp_path / "archive-data"),
        "--remote", f"MODALITY@{LOCALHOST}:{report_port}", *extra,
    ]  # fmt: skip
    scp = ScpProcess(tmp_path, args).start()
    processes.append(scp)
    return scp


def one_study(tmp_path: Path) -> list[Path]:
    """Three instances of one study: two Secondary Captures and a CT image."""
    outbox = tmp_path / "outbox"
    return write_instances(outbox, 2, study=STUDY) + write_instances(
        outbox, 1, sop_class=CT_IMAGE, study=STUDY
    )


def by_event(messages: list[Received], event_id: str) -> list[Received]:
    return [m for m in messages if m.event_id == event_id]


def store_commit_and_stop(tmp_path, modality: Modality, scp: ScpProcess) -> None:
    paths = one_study(tmp_path)
    assert modality.store(scp.port, paths) == [0, 0, 0]
    assert modality.commit(scp.port, refs_of(paths), "1.2.3.77") == 0
    assert modality.wait_report(20)
    assert scp.kill(signal.SIGTERM) == 0


def assert_instances_transferred(message: Received, scp: ScpProcess) -> None:
    """What an auditor reads: from whom, to whom, which study of which patient, how many."""
    assert (message.pri, message.app, message.msgid) == (85, "stgcmt", "IHE+RFC-3881")
    assert message.procid == str(scp.proc.pid) and message.hostname == socket.gethostname()
    event = message.xml.find("EventIdentification")
    assert (event.get("EventActionCode"), event.get("EventOutcomeIndicator")) == ("C", "0")
    source, destination = message.participants()
    assert source.attrib == {
        "UserID": "MODALITY",
        "AlternativeUserID": "AETITLES=MODALITY",
        "UserIsRequestor": "true",
        "NetworkAccessPointID": LOCALHOST,
        "NetworkAccessPointTypeCode": "2",
    }
    assert source.find("RoleIDCode").get("csd-code") == "110153"
    assert destination.get("AlternativeUserID") == "AETITLES=ARCHIVE"
    assert destination.get("UserIsRequestor") == "false"
    assert destination.get("NetworkAccessPointID") == socket.gethostname()
    assert destination.find("RoleIDCode").get("csd-code") == "110152"
    study, patient = message.objects()
    assert study.get("ParticipantObjectID") == STUDY
    counts = {
        s.get("UID"): int(s.get("NumberOfInstances"))
        for s in study.findall("ParticipantObjectDescription/SOPClass")
    }
    assert counts == {SECONDARY_CAPTURE: 2, CT_IMAGE: 1}
    assert patient.get("ParticipantObjectID") == "PAT001"


def test_store_and_commit_audited_over_udp(tmp_path: Path, modality, processes) -> None:
    with Rsyslog(tmp_path / "rsyslog") as collector:
        scp = archive(tmp_path, processes, modality.listen(), "--audit", collector.udp_url)
        intruder = AE("INTRUDER")
        intruder.add_requested_context("1.2.840.10008.1.1")
        assert intruder.associate(LOCALHOST, scp.port, ae_title="ARCHIVE").is_rejected
        store_commit_and_stop(tmp_path, modality, scp)
        messages = collector.wait_messages(5)
    activity = by_event(messages, APPLICATION_ACTIVITY)
    types = [m.xml.find("EventIdentification/EventTypeCode").get("csd-code") for m in activity]
    assert types == ["110120", "110121"]  # started, stopped
    assert len(by_event(messages, BEGIN)) == 1
    (transferred,) = by_event(messages, TRANSFERRED)
    assert_instances_transferred(transferred, scp)
    (alert,) = by_event(messages, SECURITY_ALERT)
    assert alert.pri == 84  # a warning
    assert [p.get("UserID") for p in alert.participants()] == ["ARCHIVE", "INTRUDER"]
    assert alert.objects()[0].get("ParticipantObjectID") == LOCALHOST


def test_store_and_commit_audited_over_tls(tmp_path: Path, modality, processes) -> None:
    authority = CertificateAuthority(tmp_path / "ca")
    client = authority.issue("archive")
    with Rsyslog(tmp_path / "rsyslog", CollectorTls.issue(authority)) as collector:
        config = tmp_path / "archive.toml"
        config.write_text(
            f'[audit]\nsyslog = "{collector.tls_url}"\nca = "{authority.cert}"\n'
            f'cert = "{client.cert}"\nkey = "{client.key}"\nfile = "{tmp_path / "audit.log"}"\n'
        )
        scp = archive(tmp_path, processes, modality.listen(), "--config", str(config))
        store_commit_and_stop(tmp_path, modality, scp)
        messages = collector.wait_messages(4)
    (transferred,) = by_event(messages, TRANSFERRED)
    assert_instances_transferred(transferred, scp)
    local = (tmp_path / "audit.log").read_bytes().splitlines()
    assert len(local) == len(messages) and b"DICOM Instances Transferred" in b"".join(local)


def test_the_agent_audits_its_start_a_rejected_association_and_a_forged_report(
    tmp_path: Path,
) -> None:
    """A transaction sent to ARCHIVE, another to OTHER: OTHER may associate (it has one of
    its own) but not report for ARCHIVE's; a stranger may not associate at all."""
    journal = ScuJournal(tmp_path / "scu.sqlite")
    pending_transaction(journal, tmp_path / "sent", 1)  # 1.2.3.9 to ARCHIVE@127.0.0.1
    journal.mark_requested(journal.create("1.2.3.10", "CT1", f"OTHER@{LOCALHOST}:105", []).id)
    journal.close()
    port = free_port()
    with Rsyslog(tmp_path / "rsyslog") as collector:
        command = [PYTHON, "-m", "stgcmt", "agent", "--aet", "CT1", "--bind", LOCALHOST]
        command += ["--port", str(port), "--journal", str(tmp_path / "scu.sqlite")]
        with open(tmp_path / "agent.log", "wb") as log:
            agent = subprocess.Popen([*command, "--audit", collector.udp_url], stderr=log)
        try:
            other = Archive("OTHER", report="new", report_to=("CT1", port))
            assert wait_for(lambda: listening(port), 15), "the agent did not start"
            status = other.deliver_on_new_association(CommitmentReport("1.2.3.9"))
            assert status == PROCESSING_FAILURE  # refused, nothing deleted
            stranger = Archive("STRANGER", report="new", report_to=("CT1", port))
            assert stranger.deliver_on_new_association(CommitmentReport("1.2.3.9")) is None
            agent.send_signal(signal.SIGTERM)
            assert agent.wait(timeout=15) == 0
        finally:
            if agent.poll() is None:
                agent.kill()
        messages = collector.wait_messages(4)
    assert [m.event_id for m in messages] == [
        APPLICATION_ACTIVITY,
        SECURITY_ALERT,
        SECURITY_ALERT,
        APPLICATION_ACTIVITY,
    ]
    forged, rejected = messages[1:3]
    event_types = [
        m.xml.find("EventIdentification/EventTypeCode").get("csd-code") for m in (forged, rejected)
    ]
    assert event_types == ["110132", "110126"]  # Use of Restricted Function, Node Authentication
    assert [p.get("UserID") for p in forged.participants()] == ["CT1", "OTHER"]
    assert [p.get("UserID") for p in rejected.participants()] == ["CT1", "STRANGER"]
    assert forged.xml.find("EventIdentification").get("EventOutcomeIndicator") == "8"


def test_a_failed_tls_handshake_is_a_security_alert(tmp_path: Path, processes) -> None:
    """A peer speaking plain DICOM to the TLS listener: Node Authentication, naming its host
    and why. (The start-up probe that connects and closes is one too, and says so.)"""
    authority = CertificateAuthority(tmp_path / "ca")
    archive_tls = authority.issue("archive")
    with Rsyslog(tmp_path / "rsyslog") as collector:
        tls = ["--tls-cert", str(archive_tls.cert), "--tls-key", str(archive_tls.key)]
        tls += ["--tls-ca", str(authority.cert), "--audit", collector.udp_url]
        scp = archive(tmp_path, processes, free_port(), *tls)
        plain = AE("MODALITY")
        plain.add_requested_context(SECONDARY_CAPTURE)
        assert not plain.associate(LOCALHOST, scp.port, ae_title="ARCHIVE").is_established

        def plain_dicom_alerts() -> list[Received]:
            alerts = by_event(collector.messages(), SECURITY_ALERT)
            return [a for a in alerts if "wrong version number" in alert_detail(a)]

        found = wait_for(plain_dicom_alerts, 10)
        assert found, collector.messages()
    (alert,) = found
    assert alert.xml.find("EventIdentification/EventTypeCode").get("csd-code") == "110126"
    performer = alert.participants()[1]
    assert (performer.get("UserID"), performer.get("AlternativeUserID")) == (LOCALHOST, None)
    assert alert_detail(alert).startswith("tls-handshake: TLS handshake failed")


def alert_detail(alert: Received) -> str:
    """The Security Alert subject's description, as an auditor decodes it."""
    value = alert.objects()[0].find("ParticipantObjectDetail").get("value")
    return base64.b64decode(value).decode()


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex((LOCALHOST, port)) == 0


class NeverReads:
    """A TCP listener that accepts and never reads a byte: a TLS handshake with it never
    ends."""

    def __init__(self) -> None:
        self.listener = socket.create_server((LOCALHOST, 0))
        self.port = self.listener.getsockname()[1]

    def close(self) -> None:
        self.listener.close()


STORES = 30
STORE_BOUND = 10.0
"""Seconds DCMTK's storescu may take for 30 C-STOREs, each of a new study (a Begin
Transferring message each). A sender that waited for this collector would take 5 s (the TLS
connect timeout) for each: 150 s."""


@pytest.mark.parametrize("collector", ["tls-never-reads", "udp-nothing-listening"])
def test_a_down_collector_does_not_slow_c_stores(tmp_path: Path, processes, collector: str) -> None:
    storescu = ensure_debian_package("storescu", "dcmtk")
    silent = NeverReads()
    try:
        url = (
            f"tls://{LOCALHOST}:{silent.port}"
            if collector.startswith("tls")
            else f"udp://{LOCALHOST}:{free_udp_port()}"
        )
        scp = archive(tmp_path, processes, free_port(), "--audit", url)
        paths = write_instances(tmp_path / "outbox", STORES)  # a study each
        command = [storescu, "-aet", "MODALITY", "-aec", "ARCHIVE", LOCALHOST, str(scp.port)]
        started = time.monotonic()
        try:
            sent = subprocess.run(
                [*command, *map(str, paths)],
                capture_output=True,
                text=True,
                timeout=STORE_BOUND * 3,
                env={**os.environ, "TCP_NODELAY": "1"},  # DCMTK leaves Nagle on unless told
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"{STORES} C-STOREs took over {STORE_BOUND * 3:.0f} s: held up by audit")
        elapsed = time.monotonic() - started
        assert sent.returncode == 0, sent.stderr
        print(f"{STORES} C-STOREs (storescu), audit to {collector}: {elapsed:.2f} s")
        assert elapsed < STORE_BOUND
        assert "30 stored" in scp.log.read_text()
        started = time.monotonic()
        assert scp.kill(signal.SIGTERM) == 0
        assert time.monotonic() - started < 15, "stopping gives the audit trail 5 s, not more"
    finally:
        silent.close()
