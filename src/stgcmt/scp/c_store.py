"""C-STORE into the instance store: every outcome, even an unexpected exception, is a C-STORE
status and a log line; per association, what was stored is counted and logged when it
closes."""

from __future__ import annotations

import logging
import threading
from collections import Counter, defaultdict

from stgcmt import ul
from stgcmt.dicom.status import (
    CANNOT_UNDERSTAND,
    OUT_OF_RESOURCES,
    PROCESSING_FAILURE,
    SUCCESS,
    describe_status,
)
from stgcmt.storage.instances import InstanceStore, StoreRefused, is_out_of_space, shown

log = logging.getLogger("stgcmt.scp")


class CStore:
    """The SCP's C-STORE handler."""

    def __init__(self, store: InstanceStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._stored: dict[int, Counter[str]] = defaultdict(Counter)

    def on_c_store(self, request: ul.StoreRequest) -> int:
        """Nothing a peer sends may escape into the engine."""
        try:
            return self._store(request)
        except Exception:
            log.exception(
                "C-STORE %s from %s failed (%s)",
                shown(request.sop_instance_uid),
                request.peer,
                describe_status(PROCESSING_FAILURE),
            )
            return PROCESSING_FAILURE

    def _store(self, request: ul.StoreRequest) -> int:
        try:
            outcome = self.store.store(
                request.sop_class_uid,
                request.sop_instance_uid,
                request.transfer_syntax,
                request.dataset,
                request.peer.calling_aet,
                abstract_syntax=request.abstract_syntax,
            )
        except StoreRefused as exc:
            log.error(
                "C-STORE %s from %s refused with %s: %s",
                shown(request.sop_instance_uid),
                request.peer,
                describe_status(exc.status),
                exc,
            )
            return exc.status
        except ValueError as exc:
            log.error("C-STORE %s from %s refused: %s", request.sop_instance_uid, request.peer, exc)
            return CANNOT_UNDERSTAND
        except OSError as exc:
            status = OUT_OF_RESOURCES if is_out_of_space(exc) else PROCESSING_FAILURE
            log.error(
                "C-STORE %s from %s failed (%s): %s",
                request.sop_instance_uid,
                request.peer,
                describe_status(status),
                exc,
            )
            return status
        if outcome.action == "conflict":
            log.warning(
                "C-STORE %s from %s: instance already held under another SOP Class;"
                " kept the first, a commitment for class %s will fail with %s",
                request.sop_instance_uid,
                request.peer,
                request.sop_class_uid,
                describe_status(0x0119),
            )
        with self._lock:
            self._stored[request.peer.association_id][outcome.action] += 1
        log.debug("C-STORE %s from %s: %s", request.sop_instance_uid, request.peer, outcome.action)
        return SUCCESS

    def closed(self, link: ul.Link) -> dict[str, int]:
        """Log and return what the association stored, by outcome."""
        with self._lock:
            stored = self._stored.pop(link.peer.association_id, None)
        if stored:
            log.info(
                "association from %s closed: %s",
                link.peer,
                ", ".join(f"{n} {what}" for what, n in sorted(stored.items())),
            )
        return dict(stored or {})
