"""Fixtures of the end-to-end tests that several files share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.mounts import tmpfs
from support.pynetdicom_peer import Modality


@pytest.fixture
def modality() -> Iterator[Modality]:
    """A pynetdicom modality calling AE ``ARCHIVE`` (the cluster tests' nodes); files whose
    archive has another AE title define their own ``modality``."""
    peer = Modality("MODALITY", called="ARCHIVE")
    yield peer
    peer.stop()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs that the test fills up: a real 'database or disk is full'."""
    with tmpfs(tmp_path / "small-disk", "4m") as mount_point:
        yield mount_point
