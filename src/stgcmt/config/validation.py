"""The strict, generic check of configuration values, driven by the dataclasses themselves.

Each field's annotation says which TOML type it takes, ``RANGES`` (or a field's
``metadata={"range": Range(...)}``) says which numbers are allowed. A field added to a
dataclass is therefore checked, and accepted in the file, with no new code. A field with
``metadata={"flat": True}`` (a peer's profile) takes its keys from its parent's own table.
"""

from __future__ import annotations

import json
import math
import os
import types
from collections.abc import Callable
from dataclasses import MISSING, Field, dataclass, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Literal, NoReturn, Union, get_args, get_origin, get_type_hints

from stgcmt.config.audit import syslog_url
from stgcmt.config.model import ConfigError, ScpConfig, non_empty, transfer_syntax, validate_aet


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
# 0 advertises the default; below 1,024 a PDU carries almost nothing (DCMTK's floor is
# 4,096); the field is 4 bytes on the wire.
MAX_PDU_RANGE = Range(1024, 0xFFFFFFFF)

# (class name, field name) -> range; (class name, "*") is the class's default; NOT_NEGATIVE else.
RANGES: dict[tuple[str, str], Range] = {
    ("ScpConfig", "port"): PORT_RANGE,
    ("RemoteAE", "port"): Range(1, 65535),
    ("ScpConfig", "max_references"): AT_LEAST_ONE,
    ("ScpConfig", "max_associations"): AT_LEAST_ONE,
    ("ScpConfig", "max_pending_associations"): AT_LEAST_ONE,
    ("ScpConfig", "max_pdu"): MAX_PDU_RANGE,
    ("PeerProfile", "max_pdu"): MAX_PDU_RANGE,
    ("ScuConfig", "max_pdu"): MAX_PDU_RANGE,
    ("ScuConfig", "listen_port"): Range(1, 65535),
    ("ScpConfig", "max_dataset_bytes"): Range(1024),
    ("Timeouts", "*"): POSITIVE,
    ("PeerTimeouts", "*"): POSITIVE,
    ("RetryPolicy", "*"): POSITIVE,
    ("DatabaseConfig", "pool_size"): AT_LEAST_ONE,
    ("DatabaseConfig", "lease"): POSITIVE,
}

# Fields whose strings have a grammar of their own, by field name (array items included).
STRING_CHECKS: dict[str, Callable[[str], str]] = {
    "aet": validate_aet,
    "host": non_empty,
    "name": non_empty,
    "extra_hosts": non_empty,
    "listen_bind": non_empty,
    "transfer_syntaxes": transfer_syntax,
    "syslog": syslog_url,
}

# Tuple fields written in the file as an array of tables under another name.
ARRAY_TABLES: dict[str, str] = {"remotes": "remote", "archives": "archive"}


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


def fail(where: str, key: str, expected: str, value: Any) -> NoReturn:
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
            fail(where, key, "true or false", value)
        return value
    if hint is int or hint is float:
        numeric = (int, float) if hint is float else (int,)
        word = "a number" if hint is float else "an integer"
        if isinstance(value, bool) or not isinstance(value, numeric):
            fail(where, key, f"{word} {rng.describe(free_port=free_port)}".strip(), value)
        if not rng.admits(value, free_port=free_port):
            fail(where, key, f"{word} {rng.describe(free_port=free_port)}".strip(), value)
        return float(value) if hint is float else value
    if hint is str:
        if not isinstance(value, str):
            fail(where, key, "a string", value)
        return _string_check(value, where, key)
    if hint is Path:
        if not (isinstance(value, str) or (api and isinstance(value, os.PathLike))):
            fail(where, key, "a path (a string)", value)
        if not str(value):
            fail(where, key, "a non-empty path", value)
        return Path(value)
    if get_origin(hint) is Literal:
        if value not in args:
            fail(where, key, "one of " + ", ".join(json.dumps(a) for a in args), value)
        return value
    if get_origin(hint) is tuple and len(args) == 2 and args[1] is Ellipsis:
        if not isinstance(value, list | tuple):
            fail(where, key, "an array", value)
        item = args[0]
        return tuple(
            _check_value(v, item, where, f"{key}[{i}]", rng, api=api, free_port=free_port)
            for i, v in enumerate(value)
        )
    raise ConfigError(f"{where} {key}: cannot be set here".lstrip())


def _string_check(value: str, where: str, key: str) -> str:
    check = STRING_CHECKS.get(key.partition("[")[0])
    if check is None:
        return value
    try:
        return check(value)
    except ConfigError as exc:
        raise ConfigError(f"{where} {key}: {exc}".lstrip()) from None


def is_structure(hint: Any) -> bool:
    """Nested dataclasses and tuples of dataclasses are tables of their own in the file."""
    if is_dataclass(hint):
        return True
    args = get_args(hint)
    return get_origin(hint) is tuple and bool(args) and is_dataclass(args[0])


def check_table(
    cls: type, raw: dict[str, Any], where: str, *, api: bool, free_port: bool
) -> dict[str, Any]:
    """Check a table of plain values for ``cls``: no unknown keys, no missing required ones,
    each value of its field's type and range. Returns the converted values."""
    hints = get_type_hints(cls)
    plain = {f.name: f for f in fields(cls) if not is_structure(hints[f.name])}
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


def known_keys(cls: type) -> list[str]:
    """The keys a table for ``cls`` may hold: its fields, a flat field's keys in its place."""
    hints = get_type_hints(cls)
    keys: list[str] = []
    for f in fields(cls):
        keys += known_keys(hints[f.name]) if f.metadata.get("flat") else [f.name]
    return keys


def from_table(cls: type, raw: Any, where: str) -> Any:
    """Build ``cls`` from a TOML table: plain keys checked, nested dataclasses from sub-tables,
    flat ones from the same table; unknown keys are refused, naming every known one."""
    if not isinstance(raw, dict):
        fail(where, "", "a table", raw)
    known = known_keys(cls)
    unknown = sorted(set(raw) - set(known))
    if unknown:
        listed = ", ".join(sorted(known))
        raise ConfigError(f"{where} {unknown[0]}: unknown key (known keys: {listed})")
    return _build(cls, raw, where)


def _build(cls: type, raw: dict[str, Any], where: str) -> Any:
    hints = get_type_hints(cls)
    nested: dict[str, Any] = {}
    plain: dict[str, Any] = {}
    for f in fields(cls):
        hint = hints[f.name]
        if f.metadata.get("flat"):
            nested[f.name] = _build(hint, raw, where)
        elif is_dataclass(hint) and isinstance(hint, type) and f.name in raw:
            nested[f.name] = from_table(hint, raw[f.name], f"{where} {f.name}")
        elif not is_structure(hint) and f.name in raw:
            plain[f.name] = raw[f.name]
    values = check_table(cls, plain, where, api=False, free_port=False)
    return cls(**values, **nested)


def checked_instance(obj: Any, where: str, *, free_port: bool) -> Any:
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
                fail(table, f.name, f"a {hint.__name__}", value)
            label = table if f.metadata.get("flat") else f"[{f.name}]"
            nested[f.name] = checked_instance(value, label, free_port=False)
        elif is_structure(hint):
            item = get_args(hint)[0]
            if not isinstance(value, tuple | list) or not all(isinstance(v, item) for v in value):
                fail(table, f.name, f"a tuple of {item.__name__}", value)
            label = ARRAY_TABLES.get(f.name, f.name)
            nested[f.name] = tuple(
                checked_instance(v, f"[[{label}]] #{i}", free_port=False)
                for i, v in enumerate(value, 1)
            )
        else:
            plain[f.name] = value
    converted = check_table(cls, plain, table, api=True, free_port=free_port)
    return replace(obj, **converted, **nested)


def cross_checks(config: ScpConfig, prefix: str) -> None:
    """Rules between fields that one field's range cannot express."""
    retry = config.retry
    if retry.cap < retry.start:
        raise ConfigError(
            f"{prefix}[retry] cap: expected a number of at least start"
            f" ({_number(retry.start)}), got the number {_number(retry.cap)}"
        )
    config.tls.checked(f"{prefix}[tls]")
    config.database.checked(f"{prefix}[database]")
    config.audit.checked(f"{prefix}[audit]")
    config.http.checked(f"{prefix}[http]")
    for number, remote in enumerate(config.remotes, 1):
        remote.profile.checked_against(config.tls, f"{prefix}[[remote]] #{number}")


def checked_config(config: ScpConfig, *, free_port: bool) -> ScpConfig:
    """:meth:`ScpConfig.checked`: every field, then the rules between fields."""
    checked: ScpConfig = checked_instance(config, "", free_port=free_port)
    cross_checks(checked, "")
    _shared_port_needs_shared_journal(checked)
    return checked


def _shared_port_needs_shared_journal(config: ScpConfig) -> None:
    """Processes sharing a port are nodes of one archive: on one SQLite journal, which has no
    leases, each would deliver every report; under the default node name (``HOSTNAME:PORT``)
    they would all be one node, each renewing the others' leases. Checked on the merged
    settings (the file may set the port option and the command line the rest)."""
    if not config.reuse_port:
        return
    if config.database.url is None:
        raise ConfigError(
            "[scp] reuse_port (--reuse-port): nodes sharing a port must share a PostgreSQL"
            " database; set [database] url (--database) or leave reuse_port off"
        )
    if config.database.node is None:
        raise ConfigError(
            "[scp] reuse_port (--reuse-port): nodes sharing a port need names of their own"
            " (the default HOSTNAME:PORT is the same for all); set [database] node (--node)"
        )
