"""C-STORE into the instance store: every outcome, even an unexpected exception, is a C-STORE
status and a log line; per association, what was stored is counted and logged when it
closes. A small C-STORE arrives whole (:meth:`CStore.on_c_store`, on the engine's loop); a
longer one is checked on its first bytes and written as the rest arrives
(:meth:`CStore.on_c_store_stream`, in the association's thread)."""

from __future__ import annotations

import logging
import threading
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import TypeVar

from stgcmt import ul
from stgcmt.dicom.status import (
    CANNOT_UNDERSTAND,
    OUT_OF_RESOURCES,
    PROCESSING_FAILURE,
    SUCCESS,
    describe_status,
)
from stgcmt.storage.instances import (
    IncomingInstance,
    InstanceStore,
    StoreOutcome,
    StoreRefused,
    is_out_of_space,
    shown,
)

log = logging.getLogger("stgcmt.scp")
T = TypeVar("T")


class CStore:
    """The SCP's C-STORE handler."""

    def __init__(self, store: InstanceStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._stored: dict[int, Counter[str]] = defaultdict(Counter)

    def on_c_store(self, request: ul.StoreRequest) -> int:
        """A C-STORE held whole."""
        outcome = self.guarded(request, _applied(self.store.store, request))
        return outcome if isinstance(outcome, int) else self.stored_as(request, outcome)

    def on_c_store_stream(self, request: ul.StoreRequest) -> ul.StoreSink | int:
        """A C-STORE whose ``dataset`` is the first bytes: refused or decided on them (a
        duplicate), or a sink that writes the rest to its file."""
        begun = self.guarded(request, _applied(self.store.receive, request))
        if isinstance(begun, IncomingInstance):
            return Receiving(self, request, begun)
        return begun if isinstance(begun, int) else self.stored_as(request, begun)

    def guarded(self, request: ul.StoreRequest, attempt: Callable[[], T]) -> T | int:
        """What ``attempt`` returns, or the C-STORE status of what it raised (logged): nothing
        a peer sends may escape into the engine."""
        try:
            return attempt()
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
        except Exception:
            log.exception(
                "C-STORE %s from %s failed (%s)",
                shown(request.sop_instance_uid),
                request.peer,
                describe_status(PROCESSING_FAILURE),
            )
            return PROCESSING_FAILURE

    def stored_as(self, request: ul.StoreRequest, outcome: StoreOutcome) -> int:
        """Count (and log) what a C-STORE did; Success."""
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


def _applied(method: Callable[..., T], request: ul.StoreRequest) -> Callable[[], T]:
    """``InstanceStore.store`` or ``receive`` applied to what a C-STORE request says."""
    return lambda: method(
        request.sop_class_uid,
        request.sop_instance_uid,
        request.transfer_syntax,
        request.dataset,
        request.peer.calling_aet,
        abstract_syntax=request.abstract_syntax,
    )


class Receiving:
    """The :class:`~stgcmt.ul.StoreSink` of one streamed C-STORE: the first failure decides
    its status (the rest is then dropped), an association that ends first leaves nothing."""

    def __init__(self, handler: CStore, request: ul.StoreRequest, incoming: IncomingInstance):
        self._handler = handler
        self._request = request
        self._incoming = incoming
        self._failure: int | None = None
        self._received = len(request.dataset)

    def write(self, data: bytes | memoryview) -> None:
        self._received += len(data)
        if self._failure is None:
            failed = self._handler.guarded(self._request, lambda: self._incoming.write(data))
            if isinstance(failed, int):
                self._failure = failed

    def finish(self) -> int:
        if self._failure is not None:
            return self._failure
        outcome = self._handler.guarded(self._request, self._incoming.finish)
        if isinstance(outcome, int):
            return outcome
        return self._handler.stored_as(self._request, outcome)

    def discard(self) -> None:
        self._incoming.discard()
        log.warning(
            "C-STORE %s from %s: the association ended after %d bytes of its data set;"
            " nothing of it kept",
            shown(self._request.sop_instance_uid),
            self._request.peer,
            self._received,
        )
