"""Test helpers, importable from any test."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from stgcmt.config import RemoteAE, RetryPolicy

LOCALHOST = "127.0.0.1"


SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOCALHOST, 0))
        return s.getsockname()[1]


def make_dataset(
    sop_class: str = SECONDARY_CAPTURE,
    *,
    study: str | None = None,
    series: str | None = None,
    patient_id: str = "PAT001",
    pixel_bytes: int = 64,
) -> Dataset:
    """A small but valid instance (Secondary Capture by default)."""
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study or generate_uid()
    ds.SeriesInstanceUID = series or generate_uid()
    ds.PatientID = patient_id
    ds.PatientName = "Test^Patient"
    ds.Modality = "OT"
    columns = min(pixel_bytes, 512)
    ds.Rows, ds.Columns = max(1, pixel_bytes // columns), columns
    pixel_bytes = ds.Rows * ds.Columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.SamplesPerPixel, ds.PixelRepresentation = 1, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = bytes(range(256)) * (pixel_bytes // 256) + bytes(pixel_bytes % 256)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def c_store_bytes(ds: Dataset) -> bytes:
    """The data set as a C-STORE carries it: Explicit VR Little Endian, no File Meta."""
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, ds)
    return buffer.getvalue()


def write_instances(folder: Path, count: int, **kwargs) -> list[Path]:
    """Write ``count`` Part 10 files into ``folder`` and return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for _ in range(count):
        ds = make_dataset(**kwargs)
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


FAST_RETRY = RetryPolicy(start=0.2, cap=1.0, give_up_after=3600)


def remote(aet: str, port: int) -> RemoteAE:
    return RemoteAE(aet, LOCALHOST, port)


def ensure_debian_package(command: str, package: str) -> str:
    """Return the path of ``command``, installing Debian's ``package`` if we are root.
    Fails (not skips) if it cannot: these peers are part of the suite."""
    found = shutil.which(command)
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", package], check=True, env=env)
        found = shutil.which(command)
    if not found:
        pytest.fail(f"{command} not found and Debian package {package} could not be installed")
    return found


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.05):
    """Poll until ``predicate`` returns something truthy; returns it, or None on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return None


def stgcmt(*args: str | Path, home: Path) -> subprocess.CompletedProcess[str]:
    """``python -m stgcmt ARGS`` as a user runs it, with its state (the default SCU journal)
    under ``home``; bounded to 60 s."""
    env = {**os.environ, "XDG_STATE_HOME": str(home / "state")}
    return subprocess.run(
        [sys.executable, "-m", "stgcmt", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
