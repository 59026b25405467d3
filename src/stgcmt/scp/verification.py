"""Verification: each reference of a journaled request checked against the instance store by
the configured policy, batch by batch as the journal yields them, then one durability barrier
for all that passed (not one per batch), results recorded in batches."""

from __future__ import annotations

import logging
import time

from stgcmt.config import ScpConfig
from stgcmt.dicom.commitment import Reference
from stgcmt.dicom.status import DUPLICATE_TRANSACTION_UID
from stgcmt.faults import crash_point
from stgcmt.storage.instances import BARRIER_ROWS, DurabilityBarrier, InstanceStore
from stgcmt.storage.interfaces import ScpJournal
from stgcmt.storage.scp_journal import VERIFYING, Transaction

log = logging.getLogger("stgcmt.scp")


class Verification:
    def __init__(self, config: ScpConfig, journal: ScpJournal, store: InstanceStore) -> None:
        self.config = config
        self.journal = journal
        self.store = store

    def verify(self, tx: Transaction) -> None:
        """Verify every reference of ``tx``; it is then pending its report. Skipped while
        another node of a cluster holds it (it answers, verifies and reports it)."""
        claimed = self.journal.claim(tx.id)
        if claimed is None:
            return
        tx = claimed
        self.journal.set_state(tx.id, VERIFYING)
        log.info("%s: verifying %d references (policy %s)", tx.label, tx.n_refs, self.config.verify)
        barrier = self.store.barrier(self.config.verify)
        waiting: list[tuple[int, Reference]] = []
        for batch in self.journal.reference_batches(tx.id):
            if tx.duplicate_of:
                reasons: list[int | None] = [DUPLICATE_TRANSACTION_UID] * len(batch)
            else:
                reasons = barrier.check([ref for _, ref in batch])
            self.journal.record_results(
                tx.id,
                [(seq, r) for (seq, _), r in zip(batch, reasons, strict=True) if r is not None],
            )
            waiting += [entry for entry, r in zip(batch, reasons, strict=True) if r is None]
            crash_point("scp.verify.mid")
            if len(barrier) >= BARRIER_ROWS:
                self._pass_barrier(tx, barrier, waiting)
                waiting = []
        self._pass_barrier(tx, barrier, waiting)
        tx = self.journal.finish_verification(tx.id, first_attempt_at=time.time())
        log.info(
            "%s: %d committed, %d failed; report pending for %s",
            tx.label,
            tx.n_committed,
            tx.n_failed,
            tx.calling_aet,
        )

    def _pass_barrier(
        self, tx: Transaction, barrier: DurabilityBarrier, waiting: list[tuple[int, Reference]]
    ) -> None:
        """Make the waiting references durable at once and record what became of them."""
        if not waiting:
            return
        started = time.monotonic()
        outcome = barrier.commit()
        self.journal.record_results(
            tx.id, [(seq, outcome[ref.sop_instance_uid]) for seq, ref in waiting]
        )
        log.info(
            "%s: durability barrier for %d references in %.3f s",
            tx.label,
            len(waiting),
            time.monotonic() - started,
        )
