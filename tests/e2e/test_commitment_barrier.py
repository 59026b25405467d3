"""The commitment barrier end to end: which system calls the running SCP makes to reach stable
storage (seen with strace, not asked of the code), a replacement C-STORE landing between the
sync and the index update, and the data dir on a file system that forgets what was never
synced (tools/lazyfs.py)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import dcmread

from stgcmt.storage.files import FileBlobStore
from stgcmt.storage.fsync import fsync_path, syncfs_untrusted
from stgcmt.storage.queries import SqliteScpQueries

from support.common import (
    LOCALHOST,
    PYTHON,
    ensure_debian_package,
    free_port,
    remote,
    wait_for,
    write_instances,
)
from support.pynetdicom_peer import Modality, refs_of, report_content

REPORT_WAIT = 30
COUNT = 12


@pytest.fixture
def modality():
    peer = Modality("MODALITY")
    yield peer
    peer.stop()


# -- which system calls make it durable --------------------------------------------------------


def _scp(tmp_path: Path, report_port: int, durability: str) -> tuple[subprocess.Popen, int]:
    """``stgcmt scp`` in its own process, listening."""
    port = free_port()
    config = tmp_path / "scp.toml"
    config.write_text(
        f'[scp]\nbind = "{LOCALHOST}"\nport = {port}\ndata_dir = "{tmp_path / "data"}"\n'
        f'durability = "{durability}"\n\n'
        f'[[remote]]\naet = "MODALITY"\nhost = "{LOCALHOST}"\nport = {report_port}\n'
    )
    with open(tmp_path / "scp.log", "ab") as log:
        proc = subprocess.Popen(
            [PYTHON, "-m", "stgcmt", "scp", "--config", str(config)], stdout=log, stderr=log
        )
    if not wait_for(lambda: _listening(port) or proc.poll() is not None, 60):
        proc.kill()
        proc.wait(timeout=10)
    assert proc.poll() is None, (tmp_path / "scp.log").read_text()
    return proc, port


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((LOCALHOST, port)) == 0


def _traced(pid: int, trace: Path) -> subprocess.Popen:
    """strace attached to every thread of ``pid``: its sync calls, with the paths (``-y``)."""
    strace = ensure_debian_package("strace", "strace")
    argv = [strace, "-f", "-qq", "-y", "-e", "trace=syncfs,fsync,fdatasync", "-o", str(trace)]
    tracer = subprocess.Popen([*argv, "-p", str(pid)], stderr=subprocess.DEVNULL)
    status = Path(f"/proc/{pid}/status")
    assert wait_for(lambda: "TracerPid:\t0\n" not in status.read_text(), 20), "not attached"
    return tracer


@dataclass
class Trace:
    """What strace saw: the sync calls, each with the path of its descriptor."""

    text: str
    instances: Path

    def count(self, call: str) -> int:
        return len(re.findall(rf"\b{call}\(", self.text))

    def fsynced(self) -> list[str]:
        """Paths under ``instances/`` fsynced, one entry per fsync."""
        root = re.escape(str(self.instances))
        return re.findall(rf"\bfsync\(\d+<({root}[^>]*)>", self.text)


def _commit_and_trace(tmp_path: Path, modality: Modality, durability: str) -> Trace:
    """Store COUNT instances, have them committed, stop: the sync calls strace saw."""
    proc, port = _scp(tmp_path, modality.listen(), durability)
    tracer = None
    try:
        tracer = _traced(proc.pid, tmp_path / "trace.txt")
        paths = write_instances(tmp_path / "outbox", COUNT)
        assert modality.store(port, paths) == [0] * COUNT
        assert modality.commit(port, refs_of(paths), "1.2.3.77") == 0
        assert modality.wait_report(REPORT_WAIT)
        assert report_content(modality.reports[0][1]) == ({p.stem for p in paths}, {})
    finally:
        if tracer is not None:  # detach first: a traced process may miss its SIGTERM
            tracer.send_signal(signal.SIGINT)
            tracer.wait(timeout=30)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    return Trace((tmp_path / "trace.txt").read_text(), tmp_path / "data" / "instances")


def test_the_running_scp_makes_instances_durable_with_syncfs(tmp_path, modality):
    if syncfs_untrusted(tmp_path) is not None:
        pytest.skip(f"syncfs not trusted here: {syncfs_untrusted(tmp_path)}")
    trace = _commit_and_trace(tmp_path, modality, "auto")
    assert trace.count("syncfs") >= 1
    assert not [p for p in trace.fsynced() if p.endswith(".dcm")], "files fsynced one by one"


def test_durability_fsync_fsyncs_every_file_and_its_directory(tmp_path, modality):
    trace = _commit_and_trace(tmp_path, modality, "fsync")
    assert trace.count("syncfs") == 0
    # each once per barrier; the background round and the commitment may both pass one
    files = [p for p in trace.fsynced() if p.endswith(".dcm")]
    assert len(set(files)) == COUNT
    directories = {str(Path(p).parent) for p in files} | {str(trace.instances)}
    assert directories <= set(trace.fsynced())


# -- a replacement between the sync and the index update ---------------------------------------


def test_replacement_between_sync_and_mark_is_synced_before_it_is_committed(
    scp_factory, modality, tmp_path
):
    scp = scp_factory(
        remotes=(remote("MODALITY", modality.listen()),),
        overwrite_duplicates=True,
        durability="fsync",
    )
    (path,) = write_instances(tmp_path / "first", 1)
    replacement = tmp_path / "replacement.dcm"
    ds = dcmread(path)
    ds.PatientID = "REPLACED"
    ds.save_as(replacement, enforce_file_format=True)
    name = scp.store.blobs.name_for(ds.SOPInstanceUID)
    real_sync = scp.store.blobs.sync
    synced_after_replacement: list[bool] = []
    replaced: list[bool] = []

    def sync_then_replace(names):
        real_sync(names)
        if name in names:
            synced_after_replacement.append(bool(replaced))
            if not replaced:  # a modality re-sends, over the network, between sync and mark
                assert modality.store(scp.port, [replacement]) == [0]
                replaced.append(True)

    scp.store.blobs.sync = sync_then_replace
    assert modality.store(scp.port, [path]) == [0]
    assert wait_for(lambda: replaced, 10), "no sync of the first copy"
    assert modality.commit(scp.port, refs_of([path]), "1.2.3.78") == 0
    assert modality.wait_report(REPORT_WAIT)
    assert report_content(modality.reports[0][1]) == ({ds.SOPInstanceUID}, {})
    assert True in synced_after_replacement, "the replacement was committed without its own sync"
    (row,) = SqliteScpQueries(scp.config.data_dir).instances()
    assert row["durable"] and dcmread(scp.store.path_for(ds.SOPInstanceUID)).PatientID == "REPLACED"


# -- the data dir on a file system that forgets what was never synced --------------------------


@pytest.fixture
def lazy_mount():
    """tools/lazyfs.py over a backing dir; yields (mount, cut) where cut() drops the unsynced."""
    if not os.path.exists("/dev/fuse"):
        pytest.skip("/dev/fuse is absent")
    from power_cut import LazyMount

    workdir = Path(tempfile.mkdtemp(prefix="stgcmt-barrier-test-"))
    mount = LazyMount(workdir / "backing", workdir / "mnt", workdir / "lazyfs.log")
    mount.mount()
    try:
        yield mount
    finally:
        mount.unmount()
        if not os.path.ismount(mount.mountpoint):
            shutil.rmtree(workdir, ignore_errors=True)


def test_a_synced_blob_survives_a_cut_in_a_data_dir_made_just_before(lazy_mount):
    data_dir = lazy_mount.mountpoint / "data"
    data_dir.mkdir()
    fsync_path(lazy_mount.mountpoint)  # the data dir exists; what the store adds is its part
    blobs = FileBlobStore(data_dir, "fsync")  # creates instances/ in it (syncfs: not on FUSE)
    names = [blobs.name_for(f"1.2.3.{n}") for n in range(3)]
    for n, name in enumerate(names):
        blobs.put(name, f"instance {n}".encode())
    blobs.sync(names)
    blobs.close()
    lazy_mount.unmount()  # the power cut: only what was synced is left
    for n, name in enumerate(names):
        assert (lazy_mount.backing / "data" / name).read_bytes() == f"instance {n}".encode()
