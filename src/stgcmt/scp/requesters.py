"""The associations requesters hold open, in memory only (associations die with the process):
which transactions still wait for their N-ACTION response to leave, which association asked for
which transaction, and which open associations of an AE may carry a report."""

from __future__ import annotations

import threading
from collections import defaultdict

from stgcmt import ul
from stgcmt.storage.scp_journal import Transaction


class Requesters:
    """Shared by the N-ACTION handler (which records), the worker and the delivery (which ask).
    ``wake`` is the SCP's condition: its lock guards this state, and it is notified when a
    report may now be sent."""

    def __init__(self, wake: threading.Condition) -> None:
        self._wake = wake
        self._awaiting_answer: dict[int, list[int]] = defaultdict(list)
        self._requesting_link: dict[int, ul.Link] = {}
        self._links_by_aet: dict[str, list[ul.Link]] = defaultdict(list)
        self._reassociated: set[str] = set()  # AEs with a fresh association to report on

    def journaled(self, link: ul.Link, tx_id: int) -> None:
        """An N-ACTION on ``link`` was journaled; its response has not left yet."""
        with self._wake:
            self._awaiting_answer[link.peer.association_id].append(tx_id)

    def answered(self, link: ul.Link) -> None:
        """The N-ACTION response is on its way: only now may a report follow on this
        association, or the requester could see the report before the response."""
        with self._wake:
            tx_ids = self._awaiting_answer.pop(link.peer.association_id, [])
            for tx_id in tx_ids:
                self._requesting_link[tx_id] = link
            links = self._links_by_aet[link.peer.calling_aet]
            if link not in links:
                links.append(link)
            self._reassociated.add(link.peer.calling_aet)
            self._wake.notify_all()

    def closed(self, link: ul.Link) -> None:
        with self._wake:
            self._awaiting_answer.pop(link.peer.association_id, None)
            links = self._links_by_aet.get(link.peer.calling_aet, [])
            if link in links:
                links.remove(link)

    def unanswered(self) -> set[int]:
        """Transactions whose N-ACTION response has not left: not to be reported yet."""
        with self._wake:
            return {tx for txs in self._awaiting_answer.values() for tx in txs}

    def take_reassociated(self) -> set[str]:
        """AEs that associated again since the last call (their reports are due at once)."""
        with self._wake:
            reassociated, self._reassociated = self._reassociated, set()
        return reassociated

    def link_for(self, tx: Transaction, known: bool) -> ul.Link | None:
        """The association to report on, if the mode allows one: the requesting association
        while open ('same', 'auto'), else for 'same' (or a peer that is not ``known``) any open
        association of that AE on which an N-ACTION was just answered."""
        if tx.report_assoc == "new":
            return None
        with self._wake:
            link = self._requesting_link.get(tx.id)
            if link is not None and link.is_open:
                return link
            self._requesting_link.pop(tx.id, None)
            if tx.report_assoc == "same" or not known:
                for other in self._links_by_aet.get(tx.calling_aet, []):
                    if other.is_open:
                        return other
        return None
