"""Start-up checks: storage that cannot be written stops the SCP before it listens.

We run as root, so permission bits do not stop writes; the tests use real read-only mounts
(tmpfs) and skip, saying why, where mounting is not permitted."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest

from stgcmt.storage.instances import InstanceStore
from stgcmt.storage.sqlite import Database, StorageUnavailable, ensure_writable_dir

from support.common import LOCALHOST, PYTHON, free_port
from support.mounts import read_only_file, read_only_mount

START_LIMIT = 15.0


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((LOCALHOST, port)) == 0


def _run_scp(cwd: Path, data_dir: Path) -> tuple[subprocess.CompletedProcess[str], bool]:
    """Run ``stgcmt scp`` and watch its port; returns its result and whether it ever listened."""
    port = free_port()
    args = [PYTHON, "-m", "stgcmt", "scp", "--bind", LOCALHOST, "--port", str(port)]
    proc = subprocess.Popen(
        [*args, "--data-dir", str(data_dir)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    listened = False
    deadline = time.monotonic() + START_LIMIT
    while proc.poll() is None and time.monotonic() < deadline:
        listened = listened or _listening(port)
        time.sleep(0.05)
    if proc.poll() is None:
        proc.kill()
    stdout, stderr = proc.communicate(timeout=10)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), listened


def test_read_only_data_dir_refuses_to_start(tmp_path: Path):
    with read_only_mount(tmp_path / "ro") as ro:
        started = time.monotonic()
        result, listened = _run_scp(tmp_path, ro / "data")
        assert result.returncode == 3, result.stderr
        assert time.monotonic() - started < START_LIMIT
        assert not listened
        assert f"data dir {ro / 'data'} is not writable (read-only file system)" in result.stderr
        assert "--data-dir" in result.stderr and "Traceback" not in result.stderr


def test_read_only_existing_data_dir_refuses_to_start(tmp_path: Path):
    """The data dir exists (so mkdir succeeds) but nothing can be created in it."""
    with read_only_mount(tmp_path / "ro") as ro:
        result, listened = _run_scp(tmp_path, ro)
        assert result.returncode == 3 and not listened, result.stderr
        assert f"data dir {ro} is not writable" in result.stderr


def test_read_only_database_refuses_to_start(tmp_path: Path):
    data_dir = tmp_path / "data"
    InstanceStore(data_dir, supported_classes=frozenset()).close()
    with read_only_file(data_dir / "index.sqlite"):
        result, listened = _run_scp(tmp_path, data_dir)
        assert result.returncode == 3 and not listened, result.stderr
        assert f"database {data_dir / 'index.sqlite'} is not writable" in result.stderr


def test_database_api_refuses_read_only_file(tmp_path: Path):
    path = tmp_path / "x.sqlite"
    Database(path, "CREATE TABLE IF NOT EXISTS t (a)").close()
    with read_only_file(path), pytest.raises(StorageUnavailable) as caught:
        Database(path, "CREATE TABLE IF NOT EXISTS t (a)")
    assert caught.value.path == path and "readonly" in caught.value.reason


def test_instance_store_api_refuses_read_only_instances_dir(tmp_path: Path):
    data_dir = tmp_path / "data"

    def prepare(instances: Path) -> None:
        (instances / "00").mkdir()

    with read_only_mount(data_dir / "instances", prepare) as instances:
        with pytest.raises(StorageUnavailable, match="instances directory .* is not writable"):
            InstanceStore(data_dir, supported_classes=frozenset())
        assert isinstance(StorageUnavailable("x", instances, "y"), OSError)


def test_ensure_writable_dir_leaves_no_probe(tmp_path: Path):
    ensure_writable_dir(tmp_path / "a" / "b")
    assert list((tmp_path / "a" / "b").iterdir()) == []
