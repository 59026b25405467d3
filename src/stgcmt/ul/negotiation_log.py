"""What association negotiation and C-ECHO look like in the log (logger ``stgcmt.engine``).

* INFO, once per association: each rejected presentation context (ours rejected by the peer,
  or the peer's we reject), with its abstract syntax (UID and name), transfer syntaxes and the
  result in words (PS3.8 Table 9-18); the first C-ECHO answered on an association.
* DEBUG (``-vv``): the whole A-ASSOCIATE-RQ / -AC (AE titles, every context with its syntaxes
  and result, maximum PDU, implementation class / version, role selection) and -RJ.

Pure formatting plus ``logging``: the association calls it at the moment each PDU is sent or
received, so every engine path (requester and acceptor) logs the same way.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING

from pydicom.uid import UID

from stgcmt.dicom.storage_classes import STORAGE_SOP_CLASS_NAMES
from stgcmt.ul.seam import REJECTION_WORDS

if TYPE_CHECKING:
    from stgcmt.ul.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ASSOCIATE_RQ

log = logging.getLogger("stgcmt.engine")

RESULT_WORDS = {
    0: "acceptance",
    1: "user-rejection",
    2: "no-reason (provider rejection)",
    3: "abstract syntax not supported (provider rejection)",
    4: "transfer syntaxes not supported (provider rejection)",
}
"""Presentation context results, PS3.8 Table 9-18."""

_NAMES = dict(STORAGE_SOP_CLASS_NAMES)


def syntax_name(uid: str) -> str:
    """A UID in words: our storage class table first, then pydicom's UID dictionary."""
    name = _NAMES.get(uid)
    if name is None:
        name = UID(uid).name
        if name == uid:
            return "unknown"
    return name


def named(uid: str) -> str:
    """``1.2.840.10008.1.1 (Verification SOP Class)``."""
    return f"{uid} ({syntax_name(uid)})"


def result_words(result: int) -> str:
    return RESULT_WORDS.get(result, f"result {result} (not defined by PS3.8)")


def rejection_words(rj: A_ASSOCIATE_RJ) -> str:
    kind = "transient" if rj.result == 2 else "permanent"
    words = REJECTION_WORDS.get((rj.source, rj.reason), "reason not defined by PS3.8")
    return f"{kind}, source {rj.source}, reason {rj.reason}: {words}"


def _syntaxes(uids: Iterable[str]) -> str:
    return ", ".join(named(uid) for uid in uids) or "none"


def _user_information(pdu: A_ASSOCIATE_RQ | A_ASSOCIATE_AC) -> list[str]:
    info = pdu.user_information
    lines = [
        f"  max PDU length: {info.maximum_length or 'unlimited'}",
        f"  implementation class UID: {info.implementation_class_uid or '-'}",
        f"  implementation version: {info.implementation_version_name or '-'}",
    ]
    for role in info.role_selection:
        lines.append(
            f"  role selection: {named(role.sop_class_uid)} SCU role {int(role.scu_role)},"
            f" SCP role {int(role.scp_role)}"
        )
    if not info.role_selection:
        lines.append("  role selection: none")
    return lines


def _header(pdu: A_ASSOCIATE_RQ | A_ASSOCIATE_AC, what: str, where: object) -> list[str]:
    return [
        f"{where}: {what}",
        f"  called AE: {pdu.called_ae_title!r}, calling AE: {pdu.calling_ae_title!r}",
        f"  application context: {pdu.application_context_name},"
        f" protocol version {pdu.protocol_version}",
    ]


def dump_rq(where: object, rq: A_ASSOCIATE_RQ, sent: bool) -> None:
    """The whole A-ASSOCIATE-RQ, at DEBUG."""
    if not log.isEnabledFor(logging.DEBUG):
        return
    lines = _header(rq, "A-ASSOCIATE-RQ " + ("sent" if sent else "received"), where)
    for cx in rq.presentation_contexts:
        lines.append(f"  context {cx.context_id}: {named(cx.abstract_syntax)}")
        lines.append(f"    transfer syntaxes: {_syntaxes(cx.transfer_syntaxes)}")
    lines += _user_information(rq)
    log.debug("\n".join(lines))


def dump_ac(where: object, rq: A_ASSOCIATE_RQ, ac: A_ASSOCIATE_AC, sent: bool) -> None:
    """The whole A-ASSOCIATE-AC (each context named from the RQ), at DEBUG."""
    if not log.isEnabledFor(logging.DEBUG):
        return
    abstract = {cx.context_id: cx.abstract_syntax for cx in rq.presentation_contexts}
    lines = _header(ac, "A-ASSOCIATE-AC " + ("sent" if sent else "received"), where)
    for cx in ac.presentation_contexts:
        uid = abstract.get(cx.context_id)
        name = named(uid) if uid else "never proposed"
        lines.append(f"  context {cx.context_id}: {name}: {result_words(cx.result)}")
        if cx.result == 0:
            lines.append(f"    transfer syntax: {named(cx.transfer_syntax)}")
    lines += _user_information(ac)
    log.debug("\n".join(lines))


def log_negotiation(where: object, rq: A_ASSOCIATE_RQ, ac: A_ASSOCIATE_AC, requester: bool) -> None:
    """Once per association, when the A-ASSOCIATE-AC is sent (acceptor) or received
    (requester): the DEBUG dump, and one INFO line per rejected presentation context."""
    dump_ac(where, rq, ac, sent=not requester)
    by_id = {cx.context_id: cx for cx in rq.presentation_contexts}
    answered = {cx.context_id: cx.result for cx in ac.presentation_contexts}
    who = "the peer" if requester else "us"
    for context_id, cx in by_id.items():
        result = answered.get(context_id)
        if result == 0:
            continue
        words = "no answer from the peer" if result is None else result_words(result)
        log.info(
            "%s: presentation context %d rejected by %s: %s, transfer syntaxes %s: %s",
            where,
            context_id,
            who,
            named(cx.abstract_syntax),
            ", ".join(cx.transfer_syntaxes) or "none",
            words,
        )


def log_rejection(where: object, rj: A_ASSOCIATE_RJ, sent: bool) -> None:
    """An A-ASSOCIATE-RJ, at DEBUG (the services log rejections in their own words)."""
    log.debug(
        "%s: A-ASSOCIATE-RJ %s (%s)", where, "sent" if sent else "received", rejection_words(rj)
    )


_echoed: weakref.WeakSet[object] = weakref.WeakSet()
_echoed_lock = threading.Lock()


def log_echo_answered(association: object, status: int, peer: object = None) -> None:
    """A C-ECHO we answered: INFO for the first on an association, DEBUG after that (a peer
    pinging in a loop must not flood the log)."""
    with _echoed_lock:
        first = association not in _echoed
        if first:
            _echoed.add(association)
    level = logging.INFO if first else logging.DEBUG
    who = f" from {peer}" if peer is not None else ""
    log.log(
        level,
        "%s: C-ECHO%s answered 0x%04X %s",
        association,
        who,
        status,
        "success" if status == 0 else "failure",
    )
