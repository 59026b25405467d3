"""Configuration: peers written ``AET@HOST:PORT`` and the SCP settings, from flags or TOML.

Defaults are chosen so that ``stgcmt scp`` runs with no configuration at all: AE ``STGCMT_SCP``,
port 11112, data in ``./stgcmt-data``, reports on a new association as IHE recommends.
"""

from __future__ import annotations

import json
import math
import os
import tomllib
import types
from collections.abc import Callable
from dataclasses import MISSING, Field, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Literal, NoReturn, Union, get_args, get_origin, get_type_hints

ReportRoute = Literal["new", "same", "auto"]
"""How the SCP routes a report to the requester: a new association, the requesting one, or
the requesting one while it is open and else a new one."""
VerifyPolicy = Literal["exists", "size", "checksum"]

REPORT_ROUTE_CHOICES: tuple[str, ...] = ("new", "same", "auto")
VERIFY_CHOICES: tuple[str, ...] = ("exists", "size", "checksum")


class ConfigError(ValueError):
    """A configuration value a user wrote cannot be used; the message says which and why."""


def validate_aet(aet: str) -> str:
    """AE Titles are 1-16 characters of the default repertoire, no backslash (PS3.5 VR AE)."""
    stripped = aet.strip()
    if not stripped or len(stripped) > 16 or "\\" in stripped or not stripped.isprintable():
        raise ConfigError(f"invalid AE title {aet!r}: 1 to 16 printable characters, no backslash")
    return stripped


def _non_empty(value: str) -> str:
    """Host names: an empty one would only fail at the first report."""
    if not value.strip():
        raise ConfigError("must not be empty")
    return value


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
    associate_rq: float = 10.0
    """Seconds a new connection may take to send its A-ASSOCIATE-RQ (TLS handshake included)."""
    pdu: float = 30.0
    """Seconds a PDU may take to arrive whole, from its first byte (a trickle does not reset it)."""


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


@dataclass(frozen=True)
class ScpConfig:
    aet: str = "STGCMT_SCP"
    bind: str = "0.0.0.0"
    port: int = 11112
    data_dir: Path = Path("stgcmt-data")
    remotes: tuple[RemoteAE, ...] = ()
    report_assoc: ReportRoute = "new"
    verify: VerifyPolicy = "checksum"
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

    def remote(self, aet: str) -> RemoteAE | None:
        return next((r for r in self.remotes if r.aet == aet), None)

    def checked(self, *, free_port: bool = True) -> ScpConfig:
        """Return a normalised copy after checking every field's type and range.

        The Python API may ask for port 0 ("pick a free port", for tests and embedding);
        configuration files and the command line may not (``free_port=False``).
        """
        checked = _checked_instance(self, "", free_port=free_port)
        _cross_checks(checked, "")
        return checked


# -- validation --------------------------------------------------------------------------------
#
# Driven by the dataclasses themselves: each field's annotation says which TOML type it takes,
# ``RANGES`` (or a field's ``metadata={"range": Range(...)}``) says which numbers are allowed.
# A field added to a dataclass is therefore checked, and accepted in the file, with no new code.


@dataclass(frozen=True)
class Range:
    """Allowed numbers: ``low``..``high`` inclusive, or strictly above ``low`` when ``above``.
    ``free_port_low`` is the lower bound the Python API may use instead (port 0)."""

    low: float | None = 0
    high: float | None = None
    above: bool = False
    free_port_low: float | None = None

    def admits(self, value: float, *, free_port: bool) -> bool:
        """Whether ``value`` lies in the range (NaN and infinities never do)."""
        low = self.free_port_low if free_port and self.free_port_low is not None else self.low
        if not math.isfinite(value):
            return False
        if low is not None and (value <= low if self.above else value < low):
            return False
        return self.high is None or value <= self.high

    def describe(self, *, free_port: bool) -> str:
        """The bounds in words, for the message."""
        low = self.free_port_low if free_port and self.free_port_low is not None else self.low
        if low is not None and self.high is not None:
            return f"from {_number(low)} to {_number(self.high)}"
        if low is not None:
            return f"greater than {_number(low)}" if self.above else f"of at least {_number(low)}"
        return f"of at most {_number(self.high)}" if self.high is not None else ""


PORT_RANGE = Range(1, 65535, free_port_low=0)
POSITIVE = Range(0, above=True)
AT_LEAST_ONE = Range(1)
NOT_NEGATIVE = Range(0)

# (class name, field name) -> range; (class name, "*") is the class's default; NOT_NEGATIVE else.
RANGES: dict[tuple[str, str], Range] = {
    ("ScpConfig", "port"): PORT_RANGE,
    ("RemoteAE", "port"): Range(1, 65535),
    ("ScpConfig", "max_references"): AT_LEAST_ONE,
    ("ScpConfig", "max_associations"): AT_LEAST_ONE,
    ("ScpConfig", "max_pending_associations"): AT_LEAST_ONE,
    # 0 advertises the default; below 1,024 a PDU carries almost nothing (DCMTK's floor is
    # 4,096); the field is 4 bytes on the wire.
    ("ScpConfig", "max_pdu"): Range(1024, 0xFFFFFFFF),
    ("ScpConfig", "max_dataset_bytes"): Range(1024),
    ("Timeouts", "*"): POSITIVE,
    ("RetryPolicy", "*"): POSITIVE,
}

# Fields whose strings have a grammar of their own, by field name.
STRING_CHECKS: dict[str, Callable[[str], str]] = {"aet": validate_aet, "host": _non_empty}

# ScpConfig tuple fields written in the file as an array of tables under another name.
ARRAY_TABLES: dict[str, str] = {"remotes": "remote"}


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _found(value: Any) -> str:
    """What the user wrote, in TOML words: 'the string "no"', 'the integer 1', 'a table'."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {json.dumps(value)}"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if value is None:
        return "nothing (None)"
    return f"a {type(value).__name__} ({value})"


def _fail(where: str, key: str, expected: str, value: Any) -> NoReturn:
    """Raise the one message shape users see: where, key, what was expected, what was found."""
    location = " ".join(part for part in (where, key) if part)
    raise ConfigError(f"{location}: expected {expected}, got {_found(value)}")


def _range_of(cls: type, f: Field) -> Range:
    """A field's range: its own metadata, then ``RANGES``, then "not negative"."""
    if "range" in f.metadata:
        return f.metadata["range"]
    name = cls.__name__
    return RANGES.get((name, f.name)) or RANGES.get((name, "*")) or NOT_NEGATIVE


def _check_value(
    value: Any, hint: Any, where: str, key: str, rng: Range, *, api: bool, free_port: bool
) -> Any:
    """Check one value against its annotation; return it converted (str -> Path, int -> float).

    ``api`` relaxes what only Python can pass: ``None`` for optional fields, ``os.PathLike``
    for paths. TOML values never get that latitude."""
    args = get_args(hint)
    if get_origin(hint) in (Union, types.UnionType) and type(None) in args:
        if value is None and api:
            return None
        (hint,) = [a for a in args if a is not type(None)]
        args = get_args(hint)
    if hint is bool:
        if not isinstance(value, bool):
            _fail(where, key, "true or false", value)
        return value
    if hint is int or hint is float:
        numeric = (int, float) if hint is float else (int,)
        word = "a number" if hint is float else "an integer"
        if isinstance(value, bool) or not isinstance(value, numeric):
            _fail(where, key, f"{word} {rng.describe(free_port=free_port)}".strip(), value)
        if not rng.admits(value, free_port=free_port):
            _fail(where, key, f"{word} {rng.describe(free_port=free_port)}".strip(), value)
        return float(value) if hint is float else value
    if hint is str:
        if not isinstance(value, str):
            _fail(where, key, "a string", value)
        return _string_check(value, where, key)
    if hint is Path:
        if not (isinstance(value, str) or (api and isinstance(value, os.PathLike))):
            _fail(where, key, "a path (a string)", value)
        if not str(value):
            _fail(where, key, "a non-empty path", value)
        return Path(value)
    if get_origin(hint) is Literal:
        if value not in args:
            _fail(where, key, "one of " + ", ".join(json.dumps(a) for a in args), value)
        return value
    if get_origin(hint) is tuple and len(args) == 2 and args[1] is Ellipsis:
        if not isinstance(value, list | tuple):
            _fail(where, key, "an array", value)
        item = args[0]
        return tuple(
            _check_value(v, item, where, f"{key}[{i}]", rng, api=api, free_port=free_port)
            for i, v in enumerate(value)
        )
    raise ConfigError(f"{where} {key}: cannot be set here".lstrip())


def _string_check(value: str, where: str, key: str) -> str:
    check = STRING_CHECKS.get(key)
    if check is None:
        return value
    try:
        return check(value)
    except ConfigError as exc:
        raise ConfigError(f"{where} {key}: {exc}".lstrip()) from None


def _is_structure(hint: Any) -> bool:
    """Nested dataclasses and tuples of dataclasses are tables of their own in the file."""
    if is_dataclass(hint):
        return True
    args = get_args(hint)
    return get_origin(hint) is tuple and bool(args) and is_dataclass(args[0])


def _check_table(
    cls: type, raw: dict[str, Any], where: str, *, api: bool, free_port: bool
) -> dict[str, Any]:
    """Check a table of plain values for ``cls``: no unknown keys, no missing required ones,
    each value of its field's type and range. Returns the converted values."""
    hints = get_type_hints(cls)
    plain = {f.name: f for f in fields(cls) if not _is_structure(hints[f.name])}
    unknown = sorted(set(raw) - set(plain))
    if unknown:
        known = ", ".join(sorted(plain))
        raise ConfigError(f"{where} {unknown[0]}: unknown key (known keys: {known})".lstrip())
    for name, f in plain.items():
        if name not in raw and f.default is MISSING and f.default_factory is MISSING:
            raise ConfigError(f"{where} {name}: missing (required)".lstrip())
    return {
        name: _check_value(
            value,
            hints[name],
            where,
            name,
            _range_of(cls, plain[name]),
            api=api,
            free_port=free_port,
        )
        for name, value in raw.items()
    }


def _checked_instance(obj: Any, where: str, *, free_port: bool) -> Any:
    """Check a dataclass built in Python, field by field, recursing into nested ones; return a
    normalised copy. ``where`` is the table name used in messages (``[scp]`` at the top)."""
    cls = type(obj)
    hints = get_type_hints(cls)
    table = where or "[scp]"
    plain = {}
    nested = {}
    for f in fields(cls):
        value = getattr(obj, f.name)
        hint = hints[f.name]
        if is_dataclass(hint) and isinstance(hint, type):
            if not isinstance(value, hint):
                _fail(table, f.name, f"a {hint.__name__}", value)
            nested[f.name] = _checked_instance(value, f"[{f.name}]", free_port=False)
        elif _is_structure(hint):
            item = get_args(hint)[0]
            if not isinstance(value, tuple | list) or not all(isinstance(v, item) for v in value):
                _fail(table, f.name, f"a tuple of {item.__name__}", value)
            label = ARRAY_TABLES.get(f.name, f.name)
            nested[f.name] = tuple(
                _checked_instance(v, f"[[{label}]] #{i}", free_port=False)
                for i, v in enumerate(value, 1)
            )
        else:
            plain[f.name] = value
    converted = _check_table(cls, plain, table, api=True, free_port=free_port)
    return replace(obj, **converted, **nested)


def _cross_checks(config: ScpConfig, prefix: str) -> None:
    """Rules between fields that one field's range cannot express."""
    retry = config.retry
    if retry.cap < retry.start:
        raise ConfigError(
            f"{prefix}[retry] cap: expected a number of at least start"
            f" ({_number(retry.start)}), got the number {_number(retry.cap)}"
        )
    config.tls.checked(f"{prefix}[tls]")


def load_scp_config(path: Path | None, **overrides: Any) -> ScpConfig:
    """Build the SCP configuration: defaults, then the TOML file, then command-line overrides
    (only those not ``None``). ``remotes`` from the command line are added to the file's.
    The result follows the file's rules (no port 0): this is the user-facing loader."""
    config = ScpConfig()
    if path is not None:
        config = _from_toml(path)
    extra_remotes = overrides.pop("remotes", None) or ()
    retry = {k: v for k, v in (overrides.pop("retry", None) or {}).items() if v is not None}
    tls = {k: v for k, v in (overrides.pop("tls", None) or {}).items() if v is not None}
    timeouts = {k: v for k, v in (overrides.pop("timeouts", None) or {}).items() if v is not None}
    given = {k: v for k, v in overrides.items() if v is not None}
    if "data_dir" in given:
        given["data_dir"] = Path(given["data_dir"])
    config = replace(
        config,
        **given,
        remotes=(*config.remotes, *extra_remotes),
        retry=replace(config.retry, **retry),
        tls=replace(config.tls, **tls),
        timeouts=replace(config.timeouts, **timeouts),
    )
    return config.checked(free_port=False)


def _from_toml(path: Path) -> ScpConfig:
    """Read and check a configuration file; every error names the file, table and key."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    hints = get_type_hints(ScpConfig)
    tables = {f.name: hints[f.name] for f in fields(ScpConfig) if is_dataclass(hints[f.name])}
    arrays = {
        ARRAY_TABLES.get(f.name, f.name): f.name
        for f in fields(ScpConfig)
        if _is_structure(hints[f.name]) and not is_dataclass(hints[f.name])
    }
    known = ["scp", *tables, *arrays]
    listed = ", ".join([*(f"[{t}]" for t in ["scp", *tables]), *(f"[[{a}]]" for a in arrays)])
    for name, value in data.items():
        if name not in known:
            what = f"[{name}]: unknown table" if isinstance(value, dict) else f"{name}: unknown key"
            raise ConfigError(f"{path} {what} (known tables: {listed})")
    values = _check_table(
        ScpConfig, _table(data, "scp", path), f"{path} [scp]", api=False, free_port=False
    )
    for name, cls in tables.items():
        values[name] = cls(
            **_check_table(
                cls, _table(data, name, path), f"{path} [{name}]", api=False, free_port=False
            )
        )
    for label, name in arrays.items():
        values[name] = _array_of_tables(data, label, get_args(hints[name])[0], path)
    config = ScpConfig(**values)
    _cross_checks(config, f"{path} ")
    return config


def _table(data: dict[str, Any], name: str, path: Path) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        _fail(str(path), name, f"a table [{name}]", value)
    return value


def _array_of_tables(data: dict[str, Any], label: str, cls: type, path: Path) -> tuple:
    """``[[remote]]`` entries: tables with the class's fields, or ``AET@HOST:PORT`` strings."""
    entries = data.get(label, [])
    if not isinstance(entries, list):
        _fail(str(path), label, f"an array of tables [[{label}]]", entries)
    result = []
    for number, entry in enumerate(entries, 1):
        where = f"{path} [[{label}]] #{number}"
        if isinstance(entry, str) and hasattr(cls, "parse"):
            try:
                result.append(cls.parse(entry))
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from None
        elif isinstance(entry, dict):
            result.append(cls(**_check_table(cls, entry, where, api=False, free_port=False)))
        else:
            _fail(where, "", 'a table or a string "AET@HOST:PORT"', entry)
    return tuple(result)
