"""Reading configuration files: the SCP's (``stgcmt scp --config``) and the SCU's (``stgcmt
send``/``agent --config``). Every error names the file, table and key."""

from __future__ import annotations

import tomllib
from dataclasses import fields, is_dataclass, replace
from pathlib import Path
from typing import Any, get_args, get_type_hints

from stgcmt.config.model import ConfigError, PeerProfile, ScpConfig, ScuConfig
from stgcmt.config.validation import (
    ARRAY_TABLES,
    check_table,
    cross_checks,
    fail,
    from_table,
    is_structure,
)


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
    database = {k: v for k, v in (overrides.pop("database", None) or {}).items() if v is not None}
    audit = {k: v for k, v in (overrides.pop("audit", None) or {}).items() if v is not None}
    http = {k: v for k, v in (overrides.pop("http", None) or {}).items() if v is not None}
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
        database=replace(config.database, **database),
        audit=replace(config.audit, **audit),
        http=replace(config.http, **http),
    )
    return config.checked(free_port=False)


def read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc


def _load(cls: type, top: str, path: Path) -> Any:
    """A file for ``cls``: its plain keys in ``[top]``, each nested dataclass a table of its
    own, each tuple of dataclasses an array of tables (entries may be ``AET@HOST:PORT``)."""
    data = read_toml(path)
    hints = get_type_hints(cls)
    tables = {f.name: hints[f.name] for f in fields(cls) if is_dataclass(hints[f.name])}
    arrays = {
        ARRAY_TABLES.get(f.name, f.name): f.name
        for f in fields(cls)
        if is_structure(hints[f.name]) and not is_dataclass(hints[f.name])
    }
    known = [top, *tables, *arrays]
    listed = ", ".join([*(f"[{t}]" for t in [top, *tables]), *(f"[[{a}]]" for a in arrays)])
    for name, value in data.items():
        if name not in known:
            what = f"[{name}]: unknown table" if isinstance(value, dict) else f"{name}: unknown key"
            raise ConfigError(f"{path} {what} (known tables: {listed})")
    values = check_table(
        cls, _table(data, top, path), f"{path} [{top}]", api=False, free_port=False
    )
    for name, table_cls in tables.items():
        values[name] = from_table(table_cls, _table(data, name, path), f"{path} [{name}]")
    for label, name in arrays.items():
        values[name] = _array_of_tables(data, label, get_args(hints[name])[0], path)
    return cls(**values)


def _from_toml(path: Path) -> ScpConfig:
    """Read and check the SCP's configuration file."""
    config: ScpConfig = _load(ScpConfig, "scp", path)
    cross_checks(config, f"{path} ")
    return config


def load_scu_config(path: Path) -> ScuConfig:
    """Read and check the SCU's configuration file (``[scu]``, ``[[archive]]``, ``[tls]``,
    ``[timeouts]``); archive names are unique."""
    config: ScuConfig = _load(ScuConfig, "scu", path)
    seen: set[str] = set()
    for number, archive in enumerate(config.archives, 1):
        where = f"{path} [[archive]] #{number}"
        if archive.name in seen:
            raise ConfigError(f"{where} name: {archive.name!r} is already the name of an archive")
        seen.add(archive.name)
        _scp_only_keys(archive.remote.profile, where)
        archive.remote.profile.checked_against(config.tls, where)
    config.tls.checked(f"{path} [tls]")
    config.audit.checked(f"{path} [audit]")
    config.http.checked(f"{path} [http]")
    return config


SCP_ONLY_PROFILE_KEYS = {
    "report_assoc": "where the archive sends reports is its own setting; use --report-assoc",
    "check_host": "an archive's reports are always checked against its host; "
    "list other addresses in extra_hosts",
}


def _scp_only_keys(profile: PeerProfile, where: str) -> None:
    """Profile keys that mean something only to the SCP are refused in ``[[archive]]``
    rather than accepted and ignored."""
    for key, why in SCP_ONLY_PROFILE_KEYS.items():
        if getattr(profile, key) is not None:
            raise ConfigError(f"{where} {key}: not an archive setting ({why})")


def _table(data: dict[str, Any], name: str, path: Path) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        fail(str(path), name, f"a table [{name}]", value)
    return value


def _array_of_tables(data: dict[str, Any], label: str, cls: type, path: Path) -> tuple:
    """``[[remote]]`` entries: tables with the class's fields, or ``AET@HOST:PORT`` strings."""
    entries = data.get(label, [])
    if not isinstance(entries, list):
        fail(str(path), label, f"an array of tables [[{label}]]", entries)
    result = []
    for number, entry in enumerate(entries, 1):
        where = f"{path} [[{label}]] #{number}"
        if isinstance(entry, str) and hasattr(cls, "parse"):
            try:
                result.append(cls.parse(entry))
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from None
        elif isinstance(entry, dict):
            result.append(from_table(cls, entry, where))
        else:
            fail(where, "", 'a table or a string "AET@HOST:PORT"', entry)
    return tuple(result)
