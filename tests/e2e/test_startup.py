"""Start-up checks: storage that cannot be written stops the SCP before it listens.

We run as root, so permission bits do not stop writes; the tests use real read-only mounts
(tmpfs) and skip, saying why, where mounting is not permitted."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from stgcmt.storage.instances import InstanceStore
from stgcmt.storage.sqlite import Database, StorageUnavailable, ensure_writable_dir

from support.common import LOCALHOST, PYTHON, free_port

START_LIMIT = 15.0


def _mount(*args: str) -> None:
    result = subprocess.run(["mount", *args], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount here ({result.stderr.strip() or result.returncode})")


def _unmount(where: Path) -> None:
    """Unmount, lazily if something still holds a file there (never leave a mount behind)."""
    if subprocess.run(["umount", str(where)], capture_output=True).returncode:
        subprocess.run(["umount", "-l", str(where)], check=False)


@contextmanager
def read_only_mount(where: Path, prepare=None) -> Iterator[Path]:
    """A tmpfs at ``where``, filled by ``prepare`` while writable, then remounted read-only."""
    where.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "tmpfs", str(where))
    try:
        if prepare is not None:
            prepare(where)
        _mount("-o", "remount,ro", str(where))
        yield where
    finally:
        _unmount(where)


@contextmanager
def read_only_file(path: Path) -> Iterator[Path]:
    """Bind-mount ``path`` read-only over itself: the directory stays writable."""
    _mount("--bind", str(path), str(path))
    try:
        _mount("-o", "remount,bind,ro", str(path))
        yield path
    finally:
        _unmount(path)


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
