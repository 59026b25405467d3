"""Verification: each reference of a journaled request checked against the instance store
(by the configured policy, making committed instances durable), results recorded in batches."""

from __future__ import annotations

import logging
import time

from stgcmt.config import ScpConfig
from stgcmt.dicom.status import DUPLICATE_TRANSACTION_UID
from stgcmt.faults import crash_point
from stgcmt.storage.instances import InstanceStore
from stgcmt.storage.scp_journal import VERIFYING, CommitmentJournal, Transaction

log = logging.getLogger("stgcmt.scp")


class Verification:
    def __init__(self, config: ScpConfig, journal: CommitmentJournal, store: InstanceStore) -> None:
        self.config = config
        self.journal = journal
        self.store = store

    def verify(self, tx: Transaction) -> None:
        """Verify every reference of ``tx``; it is then pending its report."""
        self.journal.set_state(tx.id, VERIFYING)
        log.info("%s: verifying %d references (policy %s)", tx.label, tx.n_refs, self.config.verify)
        for batch in self.journal.reference_batches(tx.id):
            if tx.duplicate_of:
                reasons = [DUPLICATE_TRANSACTION_UID] * len(batch)
            else:
                reasons = self.store.verify([ref for _, ref in batch], self.config.verify)
            self.journal.record_results(
                tx.id, [(seq, reason) for (seq, _), reason in zip(batch, reasons, strict=True)]
            )
            crash_point("scp.verify.mid")
        tx = self.journal.finish_verification(tx.id, first_attempt_at=time.time())
        log.info(
            "%s: %d committed, %d failed; report pending for %s",
            tx.label,
            tx.n_committed,
            tx.n_failed,
            tx.calling_aet,
        )
