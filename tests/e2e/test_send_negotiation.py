"""``stgcmt send`` transfer syntax negotiation over real sockets: archives that accept only
Implicit or only Explicit VR Little Endian receive every file (transcoded on the fly, equal
element by element), a compressed file the archive refuses fails with its reason, and the
``-xi``/``-xe``/``-xf`` flags change what the A-ASSOCIATE-RQ proposes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit

from stgcmt.scu.send import EXIT_COMMITTED, EXIT_FAILED, SendOptions, send

from support.common import (
    CT_IMAGE,
    LOCALHOST,
    SECONDARY_CAPTURE,
    make_dataset,
    remote,
    wait_for,
)
from support.interop import StoreScp, find_dcmtk, running_storescp

SCU = "CT1"
ELE, ILE = ExplicitVRLittleEndian, ImplicitVRLittleEndian
COMMITMENT = "1.2.840.10008.1.20.1"


def write(folder: Path, count: int, syntax: str, sop_class: str = SECONDARY_CAPTURE) -> list[Path]:
    """``count`` Part 10 files in ``syntax``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for _ in range(count):
        ds = make_dataset(sop_class, pixel_bytes=300)
        ds.file_meta.TransferSyntaxUID = syntax
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_jpeg(folder: Path) -> Path:
    """A JPEG Baseline file (the fragment is opaque to us: nothing decodes it)."""
    folder.mkdir(parents=True, exist_ok=True)
    ds = make_dataset()
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xe0" + bytes(60) + b"\xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    path = folder / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def assert_same_elements(original: Dataset, received: Dataset) -> None:
    assert [e.tag for e in received] == [e.tag for e in original]
    for element in original:
        assert received[element.tag].value == element.value, element


def options(**overrides) -> SendOptions:
    values = {"aet": SCU, "listen_bind": LOCALHOST, "timeout": 10.0, "report_assoc": "same"}
    return SendOptions(**(values | overrides))


def storage_proposed(archive) -> set[tuple[str, tuple[str, ...]]]:
    return {cx for assoc in archive.proposed for cx in assoc if cx[0] != COMMITMENT}


@pytest.mark.parametrize(
    ("accepts", "file_syntax"),
    [((ILE,), ELE), ((ELE,), ILE)],
    ids=["implicit-only", "explicit-only"],
)
def test_archive_with_one_syntax_receives_every_file_transcoded(
    archive_factory, tmp_path, scu_journal, accepts, file_syntax
):
    archive, port = archive_factory(transfer_syntaxes=accepts, keep_datasets=True)
    paths = write(tmp_path / "outbox", 3, file_syntax)
    originals = {str(ds.SOPInstanceUID): ds for ds in map(dcmread, paths)}

    result = send(remote("ARCHIVE", port), paths, scu_journal, options(on_commit="delete"))

    assert result.exit_status == EXIT_COMMITTED, result.to_json()
    assert not any(p.exists() for p in paths)  # committed, then deleted
    assert set(archive.syntaxes.values()) == {accepts[0]}
    assert set(archive.datasets) == set(originals)
    for uid, original in originals.items():
        assert_same_elements(original, archive.datasets[uid])
    # proposed: the file's own syntax alone, and the other uncompressed one
    other = ILE if file_syntax == ELE else ELE
    assert storage_proposed(archive) == {
        (SECONDARY_CAPTURE, (file_syntax,)),
        (SECONDARY_CAPTURE, (other,)),
    }


def test_own_syntax_sent_as_is_when_accepted(archive_factory, tmp_path, scu_journal):
    archive, port = archive_factory(keep_datasets=True)  # accepts Explicit and Implicit
    paths = write(tmp_path / "outbox", 2, ILE) + write(tmp_path / "outbox", 2, ELE, CT_IMAGE)

    result = send(remote("ARCHIVE", port), paths, scu_journal, options())

    assert result.exit_status == EXIT_COMMITTED
    by_class = {str(ds.SOPInstanceUID): ds.SOPClassUID for ds in map(dcmread, paths)}
    received = {by_class[uid]: syntax for uid, syntax in archive.syntaxes.items()}
    assert received == {SECONDARY_CAPTURE: ILE, CT_IMAGE: ELE}


def test_compressed_file_refused_fails_with_its_reason(archive_factory, tmp_path, scu_journal):
    archive, port = archive_factory(keep_datasets=True)  # no JPEG
    jpeg = write_jpeg(tmp_path / "outbox")
    plain = write(tmp_path / "outbox", 2, ELE)

    result = send(remote("ARCHIVE", port), [jpeg, *plain], scu_journal, options(on_commit="delete"))

    assert result.exit_status == EXIT_FAILED
    assert jpeg.exists()  # never sent, never deleted
    assert not any(p.exists() for p in plain)  # the others committed and deleted
    failed = [f for tx in result.transactions for f in tx.files if f.path == str(jpeg)]
    assert len(failed) == 1 and failed[0].state != "committed"
    assert "JPEG Baseline" in failed[0].reason
    assert JPEGBaseline8Bit in failed[0].reason
    assert f"ARCHIVE@{LOCALHOST}:{port}" in failed[0].reason
    assert "does not decompress" in failed[0].reason
    assert (SECONDARY_CAPTURE, (JPEGBaseline8Bit,)) in storage_proposed(archive)


def test_propose_file_only_does_not_transcode(archive_factory, tmp_path, scu_journal):
    archive, port = archive_factory(transfer_syntaxes=(ILE,))
    paths = write(tmp_path / "outbox", 2, ELE)

    result = send(
        remote("ARCHIVE", port), paths, scu_journal, options(propose="file", on_commit="delete")
    )

    assert result.exit_status == EXIT_FAILED
    assert all(p.exists() for p in paths)
    assert archive.stored == []
    reasons = {f.reason for tx in result.transactions for f in tx.files}
    assert len(reasons) == 1 and "rejected the presentation context" in reasons.pop()
    assert storage_proposed(archive) == {(SECONDARY_CAPTURE, (ELE,))}


def run_send(port: int, outbox: Path, journal: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            *(sys.executable, "-m", "stgcmt", "send", f"ARCHIVE@{LOCALHOST}:{port}", str(outbox)),
            *("--aet", SCU, "--report-assoc", "same", "--timeout", "10", "--json"),
            *("--journal", str(journal), *flags),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("flag", "proposed", "received"),
    [
        (
            None,
            {
                (CT_IMAGE, (ELE,)),
                (CT_IMAGE, (ILE,)),
                (SECONDARY_CAPTURE, (ILE,)),
                (SECONDARY_CAPTURE, (ELE,)),
            },
            {CT_IMAGE: ELE, SECONDARY_CAPTURE: ILE},
        ),
        (
            "-xf",
            {(CT_IMAGE, (ELE,)), (SECONDARY_CAPTURE, (ILE,))},
            {CT_IMAGE: ELE, SECONDARY_CAPTURE: ILE},
        ),
        (
            "-xi",
            {(CT_IMAGE, (ILE,)), (SECONDARY_CAPTURE, (ILE,))},
            {CT_IMAGE: ILE, SECONDARY_CAPTURE: ILE},
        ),
        (
            "-xe",
            {(CT_IMAGE, (ELE,)), (SECONDARY_CAPTURE, (ELE,))},
            {CT_IMAGE: ELE, SECONDARY_CAPTURE: ELE},
        ),
        ("--propose-implicit", {(CT_IMAGE, (ILE,)), (SECONDARY_CAPTURE, (ILE,))}, None),
    ],
)
def test_propose_flags_change_the_association_request(
    archive_factory, tmp_path, flag, proposed, received
):
    archive, port = archive_factory(keep_datasets=True)  # accepts Explicit and Implicit
    paths = write(tmp_path / "outbox", 1, ELE, CT_IMAGE) + write(tmp_path / "outbox", 1, ILE)
    originals = {str(ds.SOPInstanceUID): ds for ds in map(dcmread, paths)}

    done = run_send(port, tmp_path / "outbox", tmp_path / "j.sqlite", *([flag] if flag else []))

    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["exit_status"] == 0
    assert storage_proposed(archive) == proposed
    if received is not None:
        got = {originals[uid].SOPClassUID: ts for uid, ts in archive.syntaxes.items()}
        assert got == received
    for uid, original in originals.items():
        assert_same_elements(original, archive.datasets[uid])


def test_cli_json_names_the_refused_compressed_file(archive_factory, tmp_path):
    _, port = archive_factory()
    jpeg = write_jpeg(tmp_path / "outbox")

    done = run_send(port, tmp_path / "outbox", tmp_path / "j.sqlite", "--delete-committed")

    assert done.returncode == 1, done.stdout + done.stderr
    files = [f for tx in json.loads(done.stdout)["transactions"] for f in tx["files"]]
    assert [f["path"] for f in files] == [str(jpeg)]
    assert "does not decompress" in files[0]["reason"]
    assert jpeg.exists()


@pytest.fixture
def storescp_implicit_only(tmp_path: Path):
    """DCMTK storescp started with ``+xi`` (accept implicit VR little endian TS only)."""
    with running_storescp(find_dcmtk(), tmp_path, "+xi") as peer:
        yield peer


def test_storescp_accepting_implicit_only_receives_explicit_files(
    storescp_implicit_only: StoreScp, tmp_path: Path
):
    peer = storescp_implicit_only
    paths = write(tmp_path / "outbox", 3, ELE)
    originals = {str(ds.SOPInstanceUID): ds for ds in map(dcmread, paths)}

    done = subprocess.run(
        [
            *(sys.executable, "-m", "stgcmt", "send", f"{peer.aet}@{LOCALHOST}:{peer.port}"),
            *(str(tmp_path / "outbox"), "--aet", SCU, "--timeout", "5", "--json"),
            *("--delete-committed", "--journal", str(tmp_path / "j.sqlite")),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    # stored, but storescp has no Storage Commitment: exit 1, every file kept
    assert done.returncode == 1, done.stdout + done.stderr
    assert all(p.exists() for p in paths)
    received = wait_for(lambda: len(peer.received()) == 3 and peer.received(), 5)
    assert received, done.stdout + done.stderr
    for path in received:
        ds = dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == ILE
        assert_same_elements(originals[str(ds.SOPInstanceUID)], ds)
