"""The events of a service (:mod:`stgcmt.events`) as PS3.15 A.5.3 audit messages.

- Application Activity: a service started or stopped.
- Begin Transferring DICOM Instances: the first instance of a study (of one patient) stored on
  an association. DICOM Instances Transferred: when the association closes, one message per
  study and patient with its instances counted per SOP Class, the peer as source and requestor,
  this application as destination; failed C-STOREs make the outcome a minor failure (a serious
  one when nothing was stored) and are described by status.
- Security Alert: a rejected association, a forged report, a failed TLS handshake, a path
  outside the store, each with the node that caused it as the alert's subject.

What an open association accumulates is bounded (studies per association, associations open):
past a bound the oldest is written out early rather than kept.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from stgcmt.audit import messages as m
from stgcmt.audit.syslog import NOTICE, WARNING, Severity
from stgcmt.dicom.status import describe_status
from stgcmt.events import (
    ApplicationActivity,
    AssociationClosed,
    Event,
    InstanceStored,
    Peer,
    SecurityAlert,
)

Record = Callable[[bytes, float, Severity], None]
"""Where finished messages go: the XML, when it happened, the syslog severity."""

MAX_STUDIES_PER_ASSOCIATION = 256
MAX_OPEN_ASSOCIATIONS = 1024

SECURITY_ALERTS: dict[str, tuple[m.Code, m.Outcome]] = {
    "rejected-association": (m.NODE_AUTHENTICATION, m.MINOR_FAILURE),
    "tls-handshake": (m.NODE_AUTHENTICATION, m.MINOR_FAILURE),
    "forged-report": (m.USE_OF_RESTRICTED_FUNCTION, m.SERIOUS_FAILURE),
    "path-outside-store": (m.USE_OF_RESTRICTED_FUNCTION, m.SERIOUS_FAILURE),
}
"""Security Alert Event Type Code and outcome by the event's ``kind`` (others: restricted
function, minor failure)."""


def transferred(status: int) -> bool:
    """Success and the warnings (0001, 0107, 0116, Bxxx) leave the instance stored."""
    return status in (0x0000, 0x0001, 0x0107, 0x0116) or status & 0xF000 == 0xB000


@dataclass(frozen=True)
class LocalApplication:
    """This service as messages name it."""

    aet: str
    host: str
    source_id: str

    def participant(self, role: m.Code | None, *, requestor: bool = False) -> m.Participant:
        return m.Participant(self.aet, requestor, role, self.aet, self.host)


def remote(peer: Peer, role: m.Code | None, *, requestor: bool = True) -> m.Participant:
    """The peer: its AE title (or its host, before an association named one)."""
    aet = peer.calling_aet or None
    return m.Participant(aet or peer.host, requestor, role, aet, peer.host)


@dataclass
class _Association:
    """What one open association stored, by (study, patient), and its failures by status."""

    studies: dict[tuple[str | None, str | None], Counter[str]] = field(default_factory=dict)
    failures: Counter[int] = field(default_factory=Counter)


class AuditObserver:
    """An :data:`stgcmt.events.Observer`: quick, never blocking (``record`` only queues)."""

    def __init__(self, record: Record, local: LocalApplication) -> None:
        self._record = record
        self.local = local
        self._open: dict[Peer, _Association] = {}
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        if isinstance(event, ApplicationActivity):
            self._application_activity(event)
        elif isinstance(event, InstanceStored):
            self._instance_stored(event)
        elif isinstance(event, AssociationClosed):
            self._closed(event.peer, event.at)
        elif isinstance(event, SecurityAlert):
            self._security_alert(event)

    def _application_activity(self, event: ApplicationActivity) -> None:
        application = m.Participant(event.aet, False, m.APPLICATION, event.aet, self.local.host)
        xml = m.application_activity(event.what, application, self.local.source_id, event.at)
        self._record(xml, event.at, NOTICE)

    # -- transfers ------------------------------------------------------------------------------

    def _transfer(
        self, peer: Peer, study: str | None, patient: str | None, counts: Counter[str]
    ) -> m.Transfer:
        destination = self.local.participant(m.DESTINATION)
        return m.Transfer(remote(peer, m.SOURCE), destination, study, patient, counts)

    def _instance_stored(self, event: InstanceStored) -> None:
        key = (_bounded(event.study_instance_uid), _bounded(event.patient_id))
        with self._lock:
            association, written = self._association(event.peer, event.at)
            if not transferred(event.status):
                association.failures[event.status] += 1
                began = False
            else:
                began = key not in association.studies
                if began and len(association.studies) >= MAX_STUDIES_PER_ASSOCIATION:
                    written += self._written_out(event.peer, association, event.at)
                association.studies.setdefault(key, Counter())[event.sop_class_uid] += 1
        for xml, severity in written:
            self._record(xml, event.at, severity)
        if began:
            transfer = self._transfer(event.peer, *key, Counter())
            xml = m.begin_transferring(transfer, self.local.source_id, event.at)
            self._record(xml, event.at, NOTICE)

    def _association(
        self, peer: Peer, at: float
    ) -> tuple[_Association, list[tuple[bytes, Severity]]]:
        """The open association of ``peer``; when too many are open, the oldest is written out
        (its AssociationClosed was lost, or it is very long)."""
        evicted: list[tuple[bytes, Severity]] = []
        if peer not in self._open and len(self._open) >= MAX_OPEN_ASSOCIATIONS:
            oldest = next(iter(self._open))
            evicted = self._written_out(oldest, self._open.pop(oldest), at)
        return self._open.setdefault(peer, _Association()), evicted

    def _closed(self, peer: Peer, at: float) -> None:
        with self._lock:
            association = self._open.pop(peer, None)
            written = self._written_out(peer, association, at) if association else []
        for xml, severity in written:
            self._record(xml, at, severity)

    def _written_out(
        self, peer: Peer, association: _Association, at: float
    ) -> list[tuple[bytes, Severity]]:
        """One Instances Transferred per study of ``association`` (which is emptied), or one
        without a study when only failures happened."""
        failures = association.failures
        described = _failures(failures)
        outcome = m.MINOR_FAILURE if failures else m.SUCCESS
        found = []
        for (study, patient), counts in association.studies.items():
            transfer = self._transfer(peer, study, patient, counts)
            xml = m.instances_transferred(transfer, self.local.source_id, at, outcome, described)
            found.append((xml, WARNING if failures else NOTICE))
        if failures and not association.studies:  # nothing stored: no study to name
            transfer = self._transfer(peer, None, None, Counter())
            xml = m.instances_transferred(
                transfer, self.local.source_id, at, m.SERIOUS_FAILURE, described
            )
            found.append((xml, WARNING))
        association.studies, association.failures = {}, Counter()
        return found

    # -- security -------------------------------------------------------------------------------

    def _security_alert(self, event: SecurityAlert) -> None:
        kind, outcome = SECURITY_ALERTS.get(
            event.kind, (m.USE_OF_RESTRICTED_FUNCTION, m.MINOR_FAILURE)
        )
        performer = remote(event.peer, None) if event.peer is not None else None
        subject_host = event.peer.host if event.peer is not None else self.local.host
        subject = m.node(subject_host, f"{event.kind}: {event.detail}")
        reporter = self.local.participant(m.APPLICATION)
        xml = m.security_alert(
            kind, reporter, performer, subject, self.local.source_id, event.at, outcome
        )
        self._record(xml, event.at, WARNING)


def _bounded(value: str | None) -> str | None:
    """A peer's value as kept while the association lasts: cut as messages would write it."""
    return value if value is None else value[: m.MAX_VALUE]


def _failures(failures: Counter[int]) -> str | None:
    """``2 C-STOREs failed: 0xA700 out of resources x2`` (None when none failed)."""
    if not failures:
        return None
    total = sum(failures.values())
    parts = ", ".join(f"{describe_status(s)} x{n}" for s, n in sorted(failures.items()))
    return f"{total} C-STORE{'s' if total > 1 else ''} failed: {parts}"
