"""The configuration's dataclasses: peers written ``AET@HOST:PORT`` with their per-peer
profiles, and the settings of the SCP and of the SCU (``send``/``agent``).

Defaults are chosen so that ``stgcmt scp`` runs with no configuration at all: AE ``STGCMT_SCP``,
port 11112, data in ``./stgcmt-data``, reports on a new association as IHE recommends. A peer
given only as AET/host/port behaves exactly as before profiles existed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Literal

from stgcmt.config.audit import AuditConfig
from stgcmt.config.http import HttpConfig

ReportRoute = Literal["new", "same", "auto"]
"""How the SCP routes a report to the requester: a new association, the requesting one, or
the requesting one while it is open and else a new one."""
VerifyPolicy = Literal["exists", "size", "checksum"]
Durability = Literal["auto", "syncfs", "fsync"]
"""How the commitment barrier reaches stable storage: one ``syncfs`` of the data's file system
(``syncfs``: only where it reports write-back errors, Linux >= 5.8 on a local file system), a
pool of parallel ``fsync`` calls (``fsync``), or ``syncfs`` where it is trustworthy and the pool
elsewhere (``auto``)."""

REPORT_ROUTE_CHOICES: tuple[str, ...] = ("new", "same", "auto")
VERIFY_CHOICES: tuple[str, ...] = ("exists", "size", "checksum")

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
TRANSFER_SYNTAX_NAMES: dict[str, str] = {
    "implicit": IMPLICIT_VR_LITTLE_ENDIAN,
    "explicit": EXPLICIT_VR_LITTLE_ENDIAN,
    "deflate": "1.2.840.10008.1.2.1.99",
    "big": "1.2.840.10008.1.2.2",
}
"""The transfer syntaxes a profile may propose for Storage Commitment and Verification (the
uncompressed ones, by name or UID): a report is a small data set every engine encodes."""
REPORT_SYNTAXES: tuple[str, ...] = (IMPLICIT_VR_LITTLE_ENDIAN,)
"""What a report association proposes unless the peer's profile says otherwise: Implicit VR
Little Endian is the one syntax every peer must accept, and some peers accept Explicit VR and
then decode the N-EVENT-REPORT as Implicit."""


class ConfigError(ValueError):
    """A configuration value a user wrote cannot be used; the message says which and why."""


def validate_aet(aet: str) -> str:
    """AE Titles are 1-16 characters of the default repertoire, no backslash (PS3.5 VR AE)."""
    stripped = aet.strip()
    if not stripped or len(stripped) > 16 or "\\" in stripped or not stripped.isprintable():
        raise ConfigError(f"invalid AE title {aet!r}: 1 to 16 printable characters, no backslash")
    return stripped


def non_empty(value: str) -> str:
    """Host names: an empty one would only fail at the first report."""
    if not value.strip():
        raise ConfigError("must not be empty")
    return value


def transfer_syntax(value: str) -> str:
    """A transfer syntax named ``implicit``/``explicit``/``deflate``/``big`` or by its UID."""
    uid = TRANSFER_SYNTAX_NAMES.get(value.strip().lower(), value.strip())
    if uid not in TRANSFER_SYNTAX_NAMES.values():
        names = ", ".join(TRANSFER_SYNTAX_NAMES)
        raise ConfigError(f"unknown transfer syntax {value!r} (names: {names}, or their UIDs)")
    return uid


@dataclass(frozen=True)
class Timeouts:
    acse: float = 30.0
    dimse: float = 60.0
    network: float = 120.0
    connect: float = 10.0
    associate_rq: float = 10.0
    """Seconds a new connection may take to send its A-ASSOCIATE-RQ (TLS handshake included)."""
    pdu: float = 30.0
    """Seconds a PDU may take to arrive whole, from its first byte (a trickle does not reset it)."""


@dataclass(frozen=True)
class PeerTimeouts:
    """A peer's ``timeouts`` sub-table: the keys of ``[timeouts]``, each overriding the global
    value for associations with that peer (unset keys keep it)."""

    acse: float | None = None
    dimse: float | None = None
    network: float | None = None
    connect: float | None = None
    associate_rq: float | None = None
    pdu: float | None = None

    def over(self, base: Timeouts) -> Timeouts:
        given = {f.name: getattr(self, f.name) for f in fields(self)}
        return replace(base, **{k: v for k, v in given.items() if v is not None})


@dataclass(frozen=True)
class TlsConfig:
    """DICOM TLS (PS3.15 B.1). Our certificate and key are presented to peers; ``ca`` is the
    bundle peers' certificates must chain to. Host names are not checked (peers are often
    known by address); trust comes from the CA."""

    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None
    require_client_cert: bool = False

    @property
    def enabled(self) -> bool:
        return self.cert is not None or self.ca is not None

    def checked(self, where: str = "[tls]") -> TlsConfig:
        """Refuse combinations that could only fail later, at the first handshake."""
        if self.require_client_cert and self.ca is None:
            raise ConfigError(f"{where} require_client_cert: needs a CA bundle (ca, --tls-ca)")
        if (self.cert is None) != (self.key is None):
            missing = "key" if self.key is None else "cert"
            raise ConfigError(f"{where} {missing}: give both a certificate and its key")
        for name in ("cert", "key", "ca"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"{where} {name}: no such file {path}")
        return self


DATABASE_SCHEMES = ("postgresql://", "postgres://")


@dataclass(frozen=True)
class DatabaseConfig:
    """Where the index and the journal live (TOML ``[database]``): unset ``url`` is SQLite in
    the data dir (one node); a libpq URL is PostgreSQL, shared by every node of one archive."""

    url: str | None = None
    """``postgresql://user:password@host:port/db`` or the Unix-socket form
    ``postgresql://user@/db?host=/run/postgresql&port=5432``."""
    node: str | None = None
    """This node's name in the journal (who received, verified, delivered); default
    ``HOSTNAME:PORT``. Unique per node of one archive."""
    pool_size: int = 8
    """Connections this node keeps open (associations in flight + the commitment worker)."""
    lease: float = 120.0
    """Seconds a node owns a transaction it works on; another node takes it over only when
    the lease has expired (longer than one delivery attempt's timeouts)."""

    def checked(self, where: str = "[database]") -> DatabaseConfig:
        """A URL of another kind (``sqlite:``, a path) would only fail at the first query."""
        if self.url is not None and not self.url.startswith(DATABASE_SCHEMES):
            raise ConfigError(
                f"{where} url: expected a PostgreSQL URL (postgresql://...), got {self.url!r}"
                " (leave it out for SQLite in the data dir)"
            )
        if self.node is not None and not (0 < len(self.node) <= 64 and self.node.isprintable()):
            raise ConfigError(f"{where} node: expected 1 to 64 printable characters")
        return self


@dataclass(frozen=True)
class PeerProfile:
    """How to talk to one peer; every key unset means "as for everyone" (the global settings).
    In a file its keys sit in the peer's own ``[[remote]]``/``[[archive]]`` table."""

    transfer_syntaxes: tuple[str, ...] = ()
    """Proposed for Storage Commitment on associations we open to it (empty: for reports,
    Implicit VR Little Endian alone; for sends, Implicit and Explicit VR Little Endian)."""
    max_pdu: int | None = None
    tls: bool | None = None
    """True: TLS to this peer; False: plain TCP even with a global ``[tls]``; unset: as [tls]."""
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    report_assoc: ReportRoute | None = None
    check_host: bool | None = None
    extra_hosts: tuple[str, ...] = ()
    """More addresses (or host names) the peer may connect from."""
    timeouts: PeerTimeouts = field(default_factory=PeerTimeouts)

    def tls_over(self, base: TlsConfig) -> TlsConfig:
        """The TLS settings for associations we open to this peer."""
        if self.tls is False:
            return TlsConfig()
        given = {"ca": self.tls_ca, "cert": self.tls_cert, "key": self.tls_key}
        return replace(base, require_client_cert=False, **{k: v for k, v in given.items() if v})

    def checked_against(self, tls: TlsConfig, where: str) -> None:
        """Rules between the profile and the global settings."""
        if self.tls is False and any((self.tls_ca, self.tls_cert, self.tls_key)):
            raise ConfigError(f"{where} tls: false contradicts tls_ca/tls_cert/tls_key")
        own = self.tls_over(tls)
        if self.tls and not own.enabled:
            raise ConfigError(f"{where} tls: true needs tls_ca or tls_cert (here or in [tls])")
        if any((self.tls_ca, self.tls_cert, self.tls_key)) or self.tls:
            try:
                own.checked(where)
            except ConfigError as exc:
                message = str(exc)
                for name in ("cert", "key", "ca"):
                    message = message.replace(f"{where} {name}:", f"{where} tls_{name}:")
                raise ConfigError(message) from None


@dataclass(frozen=True)
class RemoteAE:
    """A known peer: who may associate with us, where to reach it, and how (its profile)."""

    aet: str
    host: str
    port: int
    profile: PeerProfile = field(default_factory=PeerProfile, metadata={"flat": True})

    @classmethod
    def parse(cls, text: str) -> RemoteAE:
        """Parse ``AET@HOST:PORT`` (dcm4che style)."""
        aet, sep, address = text.rpartition("@")
        host, colon, port = address.rpartition(":")
        if not sep or not colon or not host:
            raise ConfigError(f"peer {text!r} is not written AET@HOST:PORT")
        try:
            port_number = int(port)
        except ValueError:
            raise ConfigError(f"peer {text!r}: port {port!r} is not a number") from None
        if not 0 < port_number < 65536:
            raise ConfigError(f"peer {text!r}: port {port_number} is out of range")
        return cls(validate_aet(aet), host.strip("[]"), port_number)

    def __str__(self) -> str:
        return f"{self.aet}@{self.host}:{self.port}"


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff for report delivery, and when to stop trying."""

    start: float = 5.0
    cap: float = 600.0
    give_up_after: float = 7 * 24 * 3600.0

    def delay(self, attempts: int) -> float:
        """Delay before the attempt following ``attempts`` failed ones."""
        return min(self.cap, self.start * (2 ** max(0, attempts - 1)))


@dataclass(frozen=True)
class ScpConfig:
    aet: str = "STGCMT_SCP"
    bind: str = "0.0.0.0"
    port: int = 11112
    reuse_port: bool = False
    """Listen with ``SO_REUSEPORT``: several nodes of one archive (on PostgreSQL) on one host
    share the port, the kernel spreading new connections over them."""
    data_dir: Path = Path("stgcmt-data")
    remotes: tuple[RemoteAE, ...] = ()
    report_assoc: ReportRoute = "new"
    verify: VerifyPolicy = "checksum"
    durability: Durability = "auto"
    accept_unknown: bool = False
    overwrite_duplicates: bool = False
    max_references: int = 500_000
    max_pdu: int = 65536
    max_associations: int = 32
    max_pending_associations: int = 64
    """Connections not yet associated; past it the oldest is dropped (never counted above)."""
    max_dataset_bytes: int = 1 << 30
    """Largest data set held in memory; a bigger one is refused (C-STORE: A700)."""
    check_host: bool = True
    max_store_bytes: int = 0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeouts: Timeouts = field(default_factory=Timeouts)
    tls: TlsConfig = field(default_factory=TlsConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    http: HttpConfig = field(default_factory=HttpConfig)

    def remote(self, aet: str) -> RemoteAE | None:
        return next((r for r in self.remotes if r.aet == aet), None)

    def report_route(self, aet: str) -> ReportRoute:
        """Where reports to ``aet`` go: its profile's ``report_assoc``, else the global one."""
        remote = self.remote(aet)
        own = remote.profile.report_assoc if remote is not None else None
        return own or self.report_assoc

    def checked(self, *, free_port: bool = True) -> ScpConfig:
        """Return a normalised copy after checking every field's type and range.

        The Python API may ask for port 0 ("pick a free port", for tests and embedding);
        configuration files and the command line may not (``free_port=False``).
        """
        from stgcmt.config.validation import checked_config

        return checked_config(self, free_port=free_port)


@dataclass(frozen=True)
class Archive:
    """A named archive of the SCU's file: ``stgcmt send NAME PATH...`` sends to it."""

    name: str
    remote: RemoteAE = field(metadata={"flat": True})


@dataclass(frozen=True)
class ScuConfig:
    """``stgcmt send``/``stgcmt agent`` settings from ``--config FILE`` (flags override)."""

    aet: str | None = None
    listen_bind: str | None = None
    listen_port: int | None = None
    """The report listener: ``send --listen``, ``agent --port``."""
    journal: Path | None = None
    reporters: tuple[str, ...] = ()
    """Who else may report (``AET@HOST``, as ``--reporter``)."""
    max_pdu: int | None = None
    archives: tuple[Archive, ...] = ()
    timeouts: PeerTimeouts = field(default_factory=PeerTimeouts)
    tls: TlsConfig = field(default_factory=TlsConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    http: HttpConfig = field(default_factory=HttpConfig)

    def archive(self, name: str) -> Archive | None:
        return next((a for a in self.archives if a.name == name), None)
