"""Who may associate with the SCP: the called AE title must be ours, the association limit
holds, and the calling AE title must be a known peer (at its configured host or one of its
profile's ``extra_hosts``, unless ``check_host`` is off, globally or in its profile) or unknown
AEs must be accepted."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

from stgcmt import ul
from stgcmt.config import ScpConfig
from stgcmt.events import (
    AssociationAccepted,
    AssociationRejected,
    Events,
    Peer,
    SecurityAlert,
)
from stgcmt.ul.seam import RejectionReason

log = logging.getLogger("stgcmt.scp")

LOAD_REASONS = frozenset({"congestion", "temporary-congestion"})
"""Rejections for load, not for who is asking: no Security Alert (ATNA) for them."""


def _addresses(host: str) -> frozenset[str]:
    """The IP addresses a configured host name stands for (resolved once, at start)."""
    try:
        return frozenset(str(info[4][0]) for info in socket.getaddrinfo(host, None))
    except OSError:
        log.warning("cannot resolve %s: associations from it will be rejected", host)
        return frozenset({host})


class Admission:
    """The ``accept`` rule of the SCP's listener. ``active`` counts the associations open,
    this one included. Every decision is an event (accepted; rejected, which is also a
    security alert)."""

    def __init__(
        self, config: ScpConfig, active: Callable[[], int], events: Events | None = None
    ) -> None:
        self.config = config
        self._active = active
        self.events = events or Events()
        self._remote_addresses = {
            r.aet: frozenset().union(*map(_addresses, (r.host, *r.profile.extra_hosts)))
            for r in config.remotes
        }

    def accept(self, peer: ul.PeerInfo) -> ul.Rejection | None:
        refusal = self._refusal(peer)
        who = Peer.of(peer)
        if refusal is None:
            self.events.emit(AssociationAccepted(who))
            return None
        reason, detail = refusal
        log.warning("rejected association from %s: %s", peer, detail)
        self.events.emit(AssociationRejected(who, reason, detail))
        if reason not in LOAD_REASONS:  # a busy archive is not a security event
            self.events.emit(SecurityAlert("rejected-association", detail, who))
        return ul.Rejection(reason)

    def _refusal(self, peer: ul.PeerInfo) -> tuple[RejectionReason, str] | None:
        """None to accept, else the A-ASSOCIATE-RJ reason and why, in a sentence."""
        if peer.called_aet != self.config.aet:
            return "called-aet", f"called AE {peer.called_aet!r} is not ours ({self.config.aet!r})"
        active = self._active()
        if active > self.config.max_associations:
            return "congestion", (
                f"{active - 1} associations already open (limit {self.config.max_associations})"
            )
        known = self.config.remote(peer.calling_aet)
        check_host = self.config.check_host
        if known is not None and known.profile.check_host is not None:
            check_host = known.profile.check_host
        if known is not None and check_host:
            addresses = self._remote_addresses[known.aet]
            if peer.host not in addresses:
                hosts = ", ".join((known.host, *known.profile.extra_hosts))
                return "calling-aet", (
                    f"AE {peer.calling_aet!r} is configured at {hosts}, not {peer.host}"
                    " (add it to the peer's extra_hosts, or set check_host = false)"
                )
        if known is None and not self.config.accept_unknown:
            return "calling-aet", (
                f"calling AE {peer.calling_aet!r} is not a known peer"
                f" (add --remote {peer.calling_aet}@HOST:PORT, or --accept-unknown)"
            )
        return None
