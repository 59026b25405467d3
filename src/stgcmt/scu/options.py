"""What a ``send`` run may be asked to do, checked before anything is sent."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from stgcmt.config import ConfigError, Timeouts, TlsConfig, validate_aet
from stgcmt.scu.dicomfiles import GroupBy
from stgcmt.scu.negotiation import PROPOSE_CHOICES, Propose
from stgcmt.storage.scu_journal import OnCommit

DEFAULT_AET = "STGCMT_SCU"
DEFAULT_LISTEN_BIND = "0.0.0.0"

ReportWait = Literal["new", "same", "any"]
"""Where ``send`` waits for a report: a new association to its listener, the sending
association, or either."""
REPORT_WAIT_CHOICES: tuple[str, ...] = ("new", "same", "any")
ANY_SAME_ASSOC_WAIT = 10.0


@dataclass(frozen=True)
class Reporter:
    """Someone besides the archive asked who may report on a new association: ``AET@HOST``
    (dcm4che style; a ``:PORT`` is accepted and ignored, since a reporter connects from any
    port). The AE title alone is not enough: anyone can claim an AE title."""

    aet: str
    host: str

    @classmethod
    def parse(cls, text: str) -> Reporter:
        """``AET@HOST``, ``AET@HOST:PORT``, ``AET@[IPv6]`` or ``AET@[IPv6]:PORT``."""
        aet, sep, address = text.rpartition("@")
        if not sep or not aet or not address:
            raise ConfigError(f"reporter {text!r} is not written AET@HOST")
        if address.startswith("["):
            host, _, rest = address[1:].partition("]")
            port = rest.removeprefix(":") if rest.startswith(":") else None
            if rest and port is None:
                raise ConfigError(f"reporter {text!r} is not written AET@[IPv6]:PORT")
        elif address.count(":") == 1:
            host, port = address.split(":")
        else:
            host, port = address, None
        if not host or (port is not None and not port.isdigit()):
            raise ConfigError(f"reporter {text!r} is not written AET@HOST or AET@HOST:PORT")
        return cls(validate_aet(aet), host)

    def __str__(self) -> str:
        return f"{self.aet}@{self.host}"


class UsageError(ValueError):
    """Options that cannot work together, or nothing to send; the message says why."""


@dataclass
class SendOptions:
    aet: str = DEFAULT_AET
    report_assoc: ReportWait = "any"
    same_assoc_wait: float | None = None
    """How long the sending association waits for a report on it (default: the whole
    ``timeout`` with 'same', 10 s with 'any')."""
    timeout: float = 60.0
    on_commit: OnCommit = "keep"
    move_dir: Path | None = None
    group_by: GroupBy = None
    max_refs: int | None = None
    listen_port: int | None = None
    listen_bind: str = DEFAULT_LISTEN_BIND
    timeouts: Timeouts = field(default_factory=Timeouts)
    """For our listener (the associations we open use the archive's profile)."""
    max_pdu: int | None = None
    """Maximum PDU Length our listener advertises (None: the engine's default)."""
    tls: TlsConfig = field(default_factory=TlsConfig)
    """DICOM TLS for the associations we open and for our listener."""
    reporters: tuple[Reporter, ...] = ()
    """Who else may report on a new association, besides the archive we send to."""
    propose: Propose = "negotiate"
    """Transfer syntaxes proposed (see :mod:`stgcmt.scu.negotiation`): the file's own plus
    Explicit/Implicit VR Little Endian, only Implicit, only Explicit, or the file's only."""

    def checked(self) -> SendOptions:
        if self.report_assoc not in REPORT_WAIT_CHOICES:
            raise UsageError(f"report_assoc must be one of {', '.join(REPORT_WAIT_CHOICES)}")
        if self.report_assoc == "new" and self.listen_port is None:
            raise UsageError(
                "reports on a new association need a listener: give --listen PORT"
                " (or use --report-assoc same/any)"
            )
        if self.on_commit == "move" and self.move_dir is None:
            raise UsageError("moving committed files needs a target directory")
        if self.propose not in PROPOSE_CHOICES:
            raise UsageError(f"propose must be one of {', '.join(PROPOSE_CHOICES)}")
        if self.max_refs is not None and self.max_refs < 1:
            raise UsageError("--max-refs must be at least 1")
        if self.timeout < 0 or (self.same_assoc_wait or 0) < 0:
            raise UsageError("waiting times cannot be negative")
        try:
            self.tls.checked()
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
        return self

    @property
    def same_wait(self) -> float:
        if self.report_assoc == "new":
            return 0.0
        default = self.timeout if self.report_assoc == "same" else ANY_SAME_ASSOC_WAIT
        wait = default if self.same_assoc_wait is None else self.same_assoc_wait
        return min(wait, self.timeout)
