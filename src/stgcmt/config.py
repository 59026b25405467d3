"""Configuration: peers written ``AET@HOST:PORT`` and the SCP settings, from flags or TOML.

Defaults are chosen so that ``stgcmt scp`` runs with no configuration at all: AE ``STGCMT_SCP``,
port 11112, data in ``./stgcmt-data``, reports on a new association as IHE recommends.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

ReportAssoc = Literal["new", "same", "auto"]
VerifyPolicy = Literal["exists", "size", "checksum"]

REPORT_ASSOC_CHOICES: tuple[str, ...] = ("new", "same", "auto")
VERIFY_CHOICES: tuple[str, ...] = ("exists", "size", "checksum")


class ConfigError(ValueError):
    """A configuration value a user wrote cannot be used; the message says which and why."""


def validate_aet(aet: str) -> str:
    """AE Titles are 1-16 characters of the default repertoire, no backslash (PS3.5 VR AE)."""
    stripped = aet.strip()
    if not stripped or len(stripped) > 16 or "\\" in stripped or not stripped.isprintable():
        raise ConfigError(f"invalid AE title {aet!r}: 1 to 16 printable characters, no backslash")
    return stripped


@dataclass(frozen=True)
class RemoteAE:
    """A known peer: who may associate with us, and where to reach it."""

    aet: str
    host: str
    port: int

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
class Timeouts:
    acse: float = 30.0
    dimse: float = 60.0
    network: float = 120.0
    connect: float = 10.0


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

    def checked(self) -> TlsConfig:
        if self.require_client_cert and self.ca is None:
            raise ConfigError("tls: require_client_cert needs a CA bundle (--tls-ca)")
        if (self.cert is None) != (self.key is None):
            raise ConfigError("tls: give both a certificate and its key")
        for path in (self.cert, self.key, self.ca):
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"tls: no such file {path}")
        return self


@dataclass(frozen=True)
class ScpConfig:
    aet: str = "STGCMT_SCP"
    bind: str = "0.0.0.0"
    port: int = 11112
    data_dir: Path = Path("stgcmt-data")
    remotes: tuple[RemoteAE, ...] = ()
    report_assoc: ReportAssoc = "new"
    verify: VerifyPolicy = "checksum"
    accept_unknown: bool = False
    overwrite_duplicates: bool = False
    max_references: int = 500_000
    max_pdu: int = 0
    max_associations: int = 32
    check_host: bool = True
    max_store_bytes: int = 0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeouts: Timeouts = field(default_factory=Timeouts)
    tls: TlsConfig = field(default_factory=TlsConfig)

    def remote(self, aet: str) -> RemoteAE | None:
        return next((r for r in self.remotes if r.aet == aet), None)

    def checked(self) -> ScpConfig:
        """Return self after validating values a user may have mistyped."""
        validate_aet(self.aet)
        if self.report_assoc not in REPORT_ASSOC_CHOICES:
            raise ConfigError(f"report_assoc must be one of {', '.join(REPORT_ASSOC_CHOICES)}")
        if self.verify not in VERIFY_CHOICES:
            raise ConfigError(f"verify must be one of {', '.join(VERIFY_CHOICES)}")
        if not 0 <= self.port < 65536:
            raise ConfigError(f"port {self.port} is out of range")
        if self.max_references < 1:
            raise ConfigError("max_references must be at least 1")
        if not 0 < self.retry.start <= self.retry.cap or self.retry.give_up_after <= 0:
            raise ConfigError("retry: need 0 < start <= cap and give_up_after > 0")
        if self.max_associations < 1:
            raise ConfigError("max_associations must be at least 1")
        self.tls.checked()
        return self


def _section(data: dict[str, Any], name: str, cls: type) -> Any:
    values = data.get(name, {})
    known = {f.name for f in fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"[{name}]: unknown keys {', '.join(sorted(unknown))}")
    return cls(**values)


def load_scp_config(path: Path | None, **overrides: Any) -> ScpConfig:
    """Build the SCP configuration: defaults, then the TOML file, then command-line overrides
    (only those not ``None``). ``remotes`` from the command line are added to the file's."""
    config = ScpConfig()
    if path is not None:
        config = _from_toml(path)
    extra_remotes = overrides.pop("remotes", None) or ()
    retry = {k: v for k, v in (overrides.pop("retry", None) or {}).items() if v is not None}
    tls = {k: v for k, v in (overrides.pop("tls", None) or {}).items() if v is not None}
    given = {k: v for k, v in overrides.items() if v is not None}
    if "data_dir" in given:
        given["data_dir"] = Path(given["data_dir"])
    config = replace(
        config,
        **given,
        remotes=(*config.remotes, *extra_remotes),
        retry=replace(config.retry, **retry),
        tls=replace(config.tls, **tls),
    )
    return config.checked()


def _from_toml(path: Path) -> ScpConfig:
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {path}: {exc}") from exc
    scp = dict(data.get("scp", {}))
    allowed = {f.name for f in fields(ScpConfig)} - {"remotes", "retry", "timeouts", "tls"}
    unknown = set(scp) - allowed
    if unknown:
        raise ConfigError(f"{path} [scp]: unknown keys {', '.join(sorted(unknown))}")
    if "data_dir" in scp:
        scp["data_dir"] = Path(scp["data_dir"])
    remotes = tuple(_remote_from_toml(r) for r in data.get("remote", []))
    return ScpConfig(
        **scp,
        remotes=remotes,
        retry=_section(data, "retry", RetryPolicy),
        timeouts=_section(data, "timeouts", Timeouts),
        tls=_section(data, "tls", TlsConfig),
    )


def _remote_from_toml(entry: Any) -> RemoteAE:
    if isinstance(entry, str):
        return RemoteAE.parse(entry)
    try:
        return RemoteAE(validate_aet(entry["aet"]), str(entry["host"]), int(entry["port"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"[[remote]] entry {entry!r}: needs aet, host and port") from exc
