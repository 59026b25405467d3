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

log = logging.getLogger("stgcmt.scp")


def _addresses(host: str) -> frozenset[str]:
    """The IP addresses a configured host name stands for (resolved once, at start)."""
    try:
        return frozenset(str(info[4][0]) for info in socket.getaddrinfo(host, None))
    except OSError:
        log.warning("cannot resolve %s: associations from it will be rejected", host)
        return frozenset({host})


class Admission:
    """The ``accept`` rule of the SCP's listener. ``active`` counts the associations open,
    this one included."""

    def __init__(self, config: ScpConfig, active: Callable[[], int]) -> None:
        self.config = config
        self._active = active
        self._remote_addresses = {
            r.aet: frozenset().union(*map(_addresses, (r.host, *r.profile.extra_hosts)))
            for r in config.remotes
        }

    def accept(self, peer: ul.PeerInfo) -> ul.Rejection | None:
        if peer.called_aet != self.config.aet:
            log.warning(
                "rejected association from %s: called AE %r is not ours (%r)",
                peer,
                peer.called_aet,
                self.config.aet,
            )
            return ul.Rejection("called-aet")
        active = self._active()
        if active > self.config.max_associations:
            log.warning(
                "rejected association from %s: %d associations already open (limit %d)",
                peer,
                active - 1,
                self.config.max_associations,
            )
            return ul.Rejection("congestion")
        known = self.config.remote(peer.calling_aet)
        check_host = self.config.check_host
        if known is not None and known.profile.check_host is not None:
            check_host = known.profile.check_host
        if known is not None and check_host:
            addresses = self._remote_addresses[known.aet]
            if peer.host not in addresses:
                log.warning(
                    "rejected association from %s: AE %r is configured at %s, not %s"
                    " (add it to the peer's extra_hosts, or set check_host = false)",
                    peer,
                    peer.calling_aet,
                    ", ".join((known.host, *known.profile.extra_hosts)),
                    peer.host,
                )
                return ul.Rejection("calling-aet")
        if known is None and not self.config.accept_unknown:
            log.warning(
                "rejected association from %s: calling AE %r is not a known peer"
                " (add --remote %s@HOST:PORT, or --accept-unknown)",
                peer,
                peer.calling_aet,
                peer.calling_aet,
            )
            return ul.Rejection("calling-aet")
        return None
