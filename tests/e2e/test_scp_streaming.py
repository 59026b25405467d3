"""The C-STORE receive path end to end over real TCP: a large data set streamed to its file with
bounded memory (DCMTK storescu into a ``stgcmt scp`` process), a C-STORE cut off midway leaves
no file and no row, and a commitment sent right after stores finds every instance."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from stgcmt.config import Timeouts
from stgcmt.dicom.uids import STORAGE_COMMITMENT_PUSH_MODEL, VERIFICATION
from stgcmt.storage.queries import SqliteScpQueries
from stgcmt.ul.acse import propose, user_information
from stgcmt.ul.dimse import (
    AFFECTED_SOP_CLASS_UID,
    AFFECTED_SOP_INSTANCE_UID,
    COMMAND_DATA_SET_TYPE,
    COMMAND_FIELD,
    DATA_SET_PRESENT,
    MESSAGE_ID,
    PRIORITY,
    STATUS,
    CommandField,
    MessageAssembler,
    encode_command_set,
    fragments,
)
from stgcmt.ul.pdu import A_ABORT, A_ASSOCIATE_AC, A_ASSOCIATE_RQ, P_DATA_TF
from stgcmt.ul.seam import NON_STORAGE_SYNTAXES

from support.common import (
    LOCALHOST,
    PYTHON,
    SECONDARY_CAPTURE,
    ensure_debian_package,
    free_port,
    make_dataset,
    remote,
    wait_for,
)
from support.engine import RawPeer
from support.pynetdicom_peer import Modality, refs_of, report_content

EXPLICIT = "1.2.840.10008.1.2.1"
MiB = 1 << 20
LARGE_MB = 256
"""The streamed C-STORE's size: the issue asks for 512 MB or at least 200 MB."""
RSS_GROWTH_LIMIT_MB = 32
"""What one large C-STORE may add to the SCP's peak RSS ("a few MB"; held whole: 2.4x)."""


# -- a 256 MB C-STORE from DCMTK into a stgcmt scp process ----------------------------------


def _large_file(path: Path, megabytes: int) -> str:
    """A Part 10 file with ``megabytes`` MB of Pixel Data (OB), written in 1 MB blocks;
    returns the SHA-256 of its data set (what the archive must hold after its own File Meta)."""
    ds = make_dataset(pixel_bytes=2)
    del ds.PixelData
    ds.save_as(path, enforce_file_format=True)
    with open(path, "ab") as f:
        f.write(struct.pack("<HH2s2xI", 0x7FE0, 0x0010, b"OB", megabytes * MiB))
        block = os.urandom(MiB)
        for _ in range(megabytes):
            f.write(block)
    return _data_set_digest(path)


def _data_set_digest(path: Path) -> str:
    """SHA-256 of a Part 10 file's data set (everything after File Meta)."""
    with open(path, "rb") as f:
        f.seek(128 + 4 + 8)  # preamble, DICM, (0002,0000) UL group length
        f.seek(128 + 4 + 12 + struct.unpack("<I", f.read(4))[0])
        digest = hashlib.sha256()
        for block in iter(lambda: f.read(MiB), b""):
            digest.update(block)
    return digest.hexdigest()


def _peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((LOCALHOST, port)) == 0


@pytest.fixture
def scp_process(tmp_path: Path):
    """``stgcmt scp`` as a user runs it, on a free port; SIGTERM (then SIGKILL) after the test."""
    port = free_port()
    log = tmp_path / "scp.log"
    args = ["scp", "--bind", LOCALHOST, "--port", str(port), "--aet", "ARCHIVE"]
    args += ["--data-dir", str(tmp_path / "data"), "--accept-unknown"]
    with open(log, "ab") as out:
        proc = subprocess.Popen([PYTHON, "-m", "stgcmt", *args], stdout=out, stderr=out)
    try:
        assert wait_for(lambda: _listening(port) or proc.poll() is not None, 20)
        assert proc.poll() is None, log.read_text()
        yield proc, port, tmp_path / "data"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_a_large_c_store_is_streamed_to_its_file_with_bounded_memory(tmp_path, scp_process):
    storescu = ensure_debian_package("storescu", "dcmtk")
    proc, port, data_dir = scp_process
    path = tmp_path / "large.dcm"
    digest = _large_file(path, LARGE_MB)
    uid = dcmread(path, stop_before_pixels=True).SOPInstanceUID
    before = _peak_rss_mb(proc.pid)
    sent = subprocess.run(
        [storescu, "-v", "-aec", "ARCHIVE", LOCALHOST, str(port), str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TCP_NODELAY": "1"},
    )
    growth = _peak_rss_mb(proc.pid) - before
    assert sent.returncode == 0, sent.stderr
    assert "Received Store Response (Success)" in sent.stdout + sent.stderr
    assert growth < RSS_GROWTH_LIMIT_MB, f"peak RSS grew by {growth:.0f} MB"
    [row] = SqliteScpQueries(data_dir).instances()
    stored = data_dir / row["path"]
    assert row["sop_instance_uid"] == uid
    assert _data_set_digest(stored) == digest
    assert row["sha256"] == hashlib.sha256(stored.read_bytes()).hexdigest()  # while receiving
    assert row["size"] == stored.stat().st_size
    assert dcmread(stored, stop_before_pixels=True).file_meta.TransferSyntaxUID == EXPLICIT


# -- a C-STORE cut off midway -----------------------------------------------------------------


def _encoded(ds) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, ds)
    return buffer.getvalue()


def _associate(port: int) -> RawPeer:
    """Verification (1), Storage Commitment (3), Secondary Capture in Explicit VR LE (5)."""
    peer = RawPeer.connect(port)
    contexts = propose(
        [
            (VERIFICATION, NON_STORAGE_SYNTAXES),
            (STORAGE_COMMITMENT_PUSH_MODEL, NON_STORAGE_SYNTAXES),
            (SECONDARY_CAPTURE, (EXPLICIT,)),
        ]
    )
    peer.send(A_ASSOCIATE_RQ("ARCHIVE", "MODALITY", contexts, user_information(16384)).encode())
    assert isinstance(peer.receive(), A_ASSOCIATE_AC)
    return peer


def _c_store_pdus(ds, message_id: int = 1) -> list[bytes]:
    command = {
        AFFECTED_SOP_CLASS_UID: ds.SOPClassUID,
        COMMAND_FIELD: CommandField.C_STORE_RQ,
        MESSAGE_ID: message_id,
        PRIORITY: 0,
        COMMAND_DATA_SET_TYPE: DATA_SET_PRESENT,
        AFFECTED_SOP_INSTANCE_UID: ds.SOPInstanceUID,
    }
    pieces = list(fragments(5, encode_command_set(command), [_encoded(ds)], 16384))
    return [bytes(pieces[i]) + bytes(pieces[i + 1]) for i in range(0, len(pieces), 2)]


def _status(peer: RawPeer) -> int:
    assembler = MessageAssembler()
    while True:
        pdu = peer.receive()
        assert isinstance(pdu, P_DATA_TF), pdu
        for pdv in pdu.items:
            message = assembler.feed(pdv)
            if message is not None:
                return int(message.command[STATUS])


def _unnamed_files(root: Path) -> list[str]:
    """Files this process has open under ``root`` that have no name (O_TMPFILE) or a temp one."""
    found = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith(str(root)) and ("(deleted)" in target or target.endswith(".part")):
            found.append(target)
    return found


@pytest.mark.parametrize("ending", ["a-abort", "connection-lost", "network-timeout"])
def test_a_c_store_cut_off_midway_leaves_no_file_and_no_row(scp_factory, ending, caplog):
    scp = scp_factory(
        aet="ARCHIVE",
        accept_unknown=True,
        timeouts=Timeouts(acse=2.0, dimse=5.0, network=1.5, connect=2.0, associate_rq=2.0),
    )
    ds = make_dataset(pixel_bytes=8 * MiB)
    pdus = _c_store_pdus(ds)
    peer = _associate(scp.port)
    peer.send(b"".join(pdus[: len(pdus) // 2]))  # 4 MB of 8: well past the first 64 KiB
    assert wait_for(lambda: _unnamed_files(scp.store.root), 10), "nothing being written"
    if ending == "a-abort":
        peer.send(A_ABORT(0, 0).encode())
        peer.close()
    elif ending == "connection-lost":
        peer.sock.shutdown(socket.SHUT_RDWR)
        peer.close()
    else:
        assert isinstance(peer.receive(), A_ABORT)  # the SCP gave up waiting for the rest
        peer.close()
    assert wait_for(lambda: not _unnamed_files(scp.store.root), 10)
    assert wait_for(lambda: "nothing of it kept" in caplog.text, 5)
    assert [p for p in scp.store.root.rglob("*") if p.is_file()] == []
    assert scp.store.count() == 0
    # the archive goes on: the same instance, sent whole, is stored
    again = _associate(scp.port)
    again.send(b"".join(_c_store_pdus(ds, message_id=2)))
    assert _status(again) == 0
    again.close()
    assert scp.store.count() == 1
    assert (
        _data_set_digest(scp.store.path_for(ds.SOPInstanceUID))
        == hashlib.sha256(_encoded(ds)).hexdigest()
    )


# -- a commitment right after the stores --------------------------------------------------------


def test_a_commitment_right_after_stores_finds_every_instance(scp_factory, instances):
    """The index rows of the last C-STOREs are still waiting for the writer's next batch when
    the N-ACTION arrives: verification must see them, and make them durable. (The stores go
    from DCMTK: pynetdicom 3.0.4's SCU loses about one response in 2,000 to a race in its
    reactor thread when the SCP answers within a millisecond, pynetdicom issues #435/#875.)"""
    storescu = ensure_debian_package("storescu", "dcmtk")
    modality = Modality("MODALITY")
    try:
        scp = scp_factory(remotes=(remote("MODALITY", modality.listen()),))
        stored = instances(300)
        large = instances(2, pixel_bytes=300_000)  # streamed, indexed before their answer
        sent = subprocess.run(
            [storescu, "-v", "-aet", "MODALITY", "-aec", "STGCMT_SCP", LOCALHOST, str(scp.port)]
            + [str(p) for p in stored + large],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "TCP_NODELAY": "1"},
        )
        assert sent.returncode == 0, sent.stderr
        assert (sent.stdout + sent.stderr).count("Received Store Response (Success)") == 302
        began = time.monotonic()
        assert modality.commit(scp.port, refs_of(stored + large), "1.2.3.777") == 0
        assert modality.wait_report(30)
        committed, failed = report_content(modality.reports[0][1])
        assert failed == {}
        assert committed == {p.stem for p in stored + large}
        print(
            f"commitment of 302 just-stored instances reported in {time.monotonic() - began:.2f} s"
        )
        rows = SqliteScpQueries(scp.config.data_dir).instances()
        assert len(rows) == 302 and all(row["durable"] for row in rows)
    finally:
        modality.stop()
