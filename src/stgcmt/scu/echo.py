"""C-ECHO (Verification SCU), like DCMTK's ``echoscu``: is the peer there, does it accept our
AE title, and how long do association + C-ECHO take.

Each attempt is one association (A-ASSOCIATE, C-ECHO, A-RELEASE), so ``repeat`` measures what
a real sender pays per connection, like ``ping``. Exit statuses: :data:`EXIT_ECHO_OK` (0)
every C-ECHO answered Success; :data:`EXIT_ECHO_FAILED` (1) the peer answered but said no: an
A-ASSOCIATE-RJ (its reason in words), Verification not accepted, an abort, a failure status,
or no C-ECHO response; :data:`EXIT_ECHO_UNREACHABLE` (2) no DICOM answer at all (connection
refused or timed out, TLS handshake failed, no answer to the association request). Over
several attempts the worst one counts.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from stgcmt import ul
from stgcmt.config import RemoteAE, Timeouts, TlsConfig
from stgcmt.dicom.status import SUCCESS, describe_status

log = logging.getLogger("stgcmt.scu")

EXIT_ECHO_OK = 0
EXIT_ECHO_FAILED = 1
EXIT_ECHO_UNREACHABLE = 2


@dataclass(frozen=True)
class EchoAttempt:
    """One association + C-ECHO."""

    status: int | None
    """The C-ECHO response status; None if there was none (see ``error``)."""
    round_trip_ms: float | None
    """Association + C-ECHO, from connecting to the response (the release not included)."""
    error: str | None = None
    exit_status: int = EXIT_ECHO_OK

    @property
    def words(self) -> str:
        return self.error or describe_status(self.status)

    def as_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "status_hex": None if self.status is None else f"0x{self.status:04X}",
            "status_words": None if self.status is None else describe_status(self.status),
            "round_trip_ms": None if self.round_trip_ms is None else round(self.round_trip_ms, 3),
            "error": self.error,
            "exit_status": self.exit_status,
        }


@dataclass
class EchoResult:
    remote: RemoteAE
    aet: str
    attempts: list[EchoAttempt] = field(default_factory=list)

    @property
    def exit_status(self) -> int:
        return max((a.exit_status for a in self.attempts), default=EXIT_ECHO_OK)

    def times(self) -> list[float]:
        return [a.round_trip_ms for a in self.attempts if a.round_trip_ms is not None]

    def as_json(self) -> dict[str, Any]:
        times = self.times()
        return {
            "remote": str(self.remote),
            "calling_aet": self.aet,
            "called_aet": self.remote.aet,
            "exit_status": self.exit_status,
            "attempts": [a.as_json() for a in self.attempts],
            "succeeded": sum(a.exit_status == EXIT_ECHO_OK for a in self.attempts),
            "round_trip_ms": {
                "min": round(min(times), 3),
                "avg": round(sum(times) / len(times), 3),
                "max": round(max(times), 3),
            }
            if times
            else None,
        }


def echo_once(
    aet: str,
    remote: RemoteAE,
    *,
    timeouts: Timeouts | None = None,
    tls: TlsConfig | None = None,
) -> EchoAttempt:
    """One association proposing only Verification, one C-ECHO, a release."""
    started = time.perf_counter()
    try:
        association = ul.open_association(
            aet, remote, ul.ContextPlan(echo=True), timeouts=timeouts, tls=tls
        )
    except ul.Unreachable as exc:
        log.warning("C-ECHO to %s: %s", remote, exc)
        return EchoAttempt(None, None, str(exc), EXIT_ECHO_UNREACHABLE)
    except ul.AssociationError as exc:
        log.warning("C-ECHO to %s: %s", remote, exc)
        return EchoAttempt(None, None, str(exc), EXIT_ECHO_FAILED)
    with association:
        status = association.c_echo()
        elapsed = (time.perf_counter() - started) * 1000
    log.info("C-ECHO to %s as %s: %s in %.1f ms", remote, aet, describe_status(status), elapsed)
    if status is None:
        error = f"{remote} sent no C-ECHO response (timed out or aborted)"
        return EchoAttempt(None, elapsed, error, EXIT_ECHO_FAILED)
    ok = status == SUCCESS
    return EchoAttempt(status, elapsed, None, EXIT_ECHO_OK if ok else EXIT_ECHO_FAILED)


def echo(
    aet: str,
    remote: RemoteAE,
    *,
    repeat: int = 1,
    interval: float = 0.0,
    timeouts: Timeouts | None = None,
    tls: TlsConfig | None = None,
    progress: Any = None,
) -> EchoResult:
    """``repeat`` attempts (each its own association), ``interval`` seconds apart;
    ``progress(n, attempt)`` is called after each."""
    result = EchoResult(remote, aet)
    for n in range(1, repeat + 1):
        if n > 1 and interval > 0:
            time.sleep(interval)
        attempt = echo_once(aet, remote, timeouts=timeouts, tls=tls)
        result.attempts.append(attempt)
        if progress is not None:
            progress(n, attempt)
    return result
