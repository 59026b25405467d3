"""``python -m bench --cluster`` names, from the archive's own journal, why references it had
acknowledged failed (the run is then kept as evidence, not turned into a figure)."""

from __future__ import annotations

import sys
from pathlib import Path

from stgcmt.dicom.commitment import Reference

from support.common import SECONDARY_CAPTURE, remote
from support.pynetdicom_peer import Modality, refs_of

REPO = Path(__file__).resolve().parents[2]


def test_failure_reasons_come_from_the_archives_journal(scp_factory, instances):
    sys.path.insert(0, str(REPO))  # bench/ is run from the repository, not installed
    from bench.cluster import failure_reasons

    modality = Modality("MODALITY")
    try:
        scp = scp_factory(remotes=(remote("MODALITY", modality.listen()),))
        stored = instances(2)
        assert modality.store(scp.port, stored) == [0, 0]
        missing = Reference(SECONDARY_CAPTURE, "1.2.826.0.1.3680043.8.498.404")
        assert modality.commit(scp.port, [*refs_of(stored), missing], "1.2.3.4040") == 0
        assert modality.wait_report(30)
        why = failure_reasons(scp.config.data_dir, None)
    finally:
        modality.stop()
    assert why == "1 x 0x0112 no such object instance, not indexed"
