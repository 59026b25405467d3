"""A 100,000-reference N-ACTION: batched lookups, one report, the server stays responsive."""

from __future__ import annotations

import resource

from pydicom.uid import generate_uid

from stgcmt.dicom.commitment import Reference
from stgcmt.dicom.status import NO_SUCH_OBJECT_INSTANCE

from support.common import SECONDARY_CAPTURE, remote
from support.pynetdicom_peer import Modality, refs_of, report_content

REFERENCES = 100_000


def test_hundred_thousand_references(scp_factory, instances):
    modality = Modality("MODALITY")
    try:
        scp = scp_factory(remotes=(remote("MODALITY", modality.listen()),))
        stored = instances(20)
        modality.store(scp.port, stored)
        refs = refs_of(stored) + [
            Reference(SECONDARY_CAPTURE, generate_uid()) for _ in range(REFERENCES - 20)
        ]
        assert modality.commit(scp.port, refs, "1.2.3.400") == 0
        assert modality.wait_report(240)
        committed, failed = report_content(modality.reports[0][1])
        assert committed == {p.stem for p in stored}
        assert len(failed) == REFERENCES - 20
        assert set(failed.values()) == {NO_SUCH_OBJECT_INSTANCE}
        tx = scp.wait_delivered("1.2.3.400", 10)
        assert tx.n_refs == REFERENCES and tx.n_committed == 20
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS of the test process (SCP + modality): {peak_mb:.0f} MB")
    finally:
        modality.stop()
