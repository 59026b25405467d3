"""Fixtures of the end-to-end tests that several files share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.pynetdicom_peer import Modality


@pytest.fixture
def modality() -> Iterator[Modality]:
    """A pynetdicom modality calling AE ``ARCHIVE`` (the cluster tests' nodes); files whose
    archive has another AE title define their own ``modality``."""
    peer = Modality("MODALITY", called="ARCHIVE")
    yield peer
    peer.stop()
