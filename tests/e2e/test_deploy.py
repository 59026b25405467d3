"""deploy/: the example TOMLs load with our loaders (and so does every option they show
commented out), the systemd units pass ``systemd-analyze verify``, their ExecStart command
lines parse as ``stgcmt`` arguments pointing at those files, and the sysusers file creates the
user the units run as."""

from __future__ import annotations

import configparser
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import get_args, get_type_hints

import pytest

from stgcmt.cli import build_parser
from stgcmt.config import ARRAY_TABLES, ScpConfig, ScuConfig, load_scp_config, load_scu_config
from stgcmt.config.toml import SCP_ONLY_PROFILE_KEYS
from stgcmt.config.validation import is_structure, known_keys

from support.common import ensure_debian_package

DEPLOY = Path(__file__).parents[2] / "deploy"
UNITS = {"stgcmt-scp.service": "scp.toml", "stgcmt-agent.service": "agent.toml"}
COMMENTED_OPTION = re.compile(r"^#(?=[a-z_]+ = )", re.MULTILINE)
STGCMT = Path(sys.executable).with_name("stgcmt")


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(DEPLOY / name)
    return parser


def test_the_example_tomls_load() -> None:
    scp = load_scp_config(DEPLOY / "scp.toml")
    assert (scp.aet, [str(r) for r in scp.remotes]) == ("ARCHIVE", ["CT1@10.0.0.21:104"])
    assert not scp.audit.enabled and not scp.http.enabled and scp.database.url is None
    scu = load_scu_config(DEPLOY / "agent.toml")
    assert scu.aet == "CT1" and [a.name for a in scu.archives] == ["PACS"]


def uncommented(name: str, folder: Path) -> Path:
    """The example with every ``#key = value`` line active, its files made to exist."""
    text = COMMENTED_OPTION.sub("", (DEPLOY / name).read_text())
    for path in set(re.findall(r'"/etc/stgcmt/([^"]+)"', text)):
        (folder / path).write_text("")
    path = folder / name
    path.write_text(text.replace('"/etc/stgcmt/', f'"{folder}/'))
    return path


def test_every_option_shown_commented_out_is_one_the_loader_takes(tmp_path: Path) -> None:
    """The examples document every [http], [audit], [database], [tls] and profile key by name
    with a valid value: uncommented, they load (a renamed key would fail here)."""
    scp = load_scp_config(uncommented("scp.toml", tmp_path))
    assert scp.audit.collector is not None and scp.audit.collector.transport == "tls"
    assert scp.http.listen == "127.0.0.1:8080" and scp.database.url is not None
    assert scp.tls.require_client_cert and scp.remotes[0].profile.tls
    scu = load_scu_config(uncommented("agent.toml", tmp_path))
    assert scu.audit.syslog == "tls://audit.example:6514" and scu.http.listen is not None


def tables_of(cls: type, top: str) -> dict[str, set[str]]:
    """Every table a file for ``cls`` may hold, with every key it may hold."""
    hints = get_type_hints(cls)
    tables = {top: {f.name for f in fields(cls) if not is_structure(hints[f.name])}}
    for f in fields(cls):
        hint = hints[f.name]
        if is_dataclass(hint):
            tables[f.name] = set(known_keys(hint))  # type: ignore[arg-type]
        elif is_structure(hint):
            tables[ARRAY_TABLES.get(f.name, f.name)] = set(known_keys(get_args(hint)[0]))
    if cls is ScuConfig:  # an archive refuses the keys that only mean something to the SCP
        tables["archive"] -= set(SCP_ONLY_PROFILE_KEYS)
    return tables


@pytest.mark.parametrize(
    ("name", "cls", "top"), [("scp.toml", ScpConfig, "scp"), ("agent.toml", ScuConfig, "scu")]
)
def test_every_key_the_loader_knows_is_in_the_example(name: str, cls: type, top: str) -> None:
    """A key added to the configuration and not to the example fails here: the examples
    show every option."""
    data = tomllib.loads(COMMENTED_OPTION.sub("", (DEPLOY / name).read_text()))
    for table, keys in tables_of(cls, top).items():
        found = data.get(table, {})
        shown = set(found[0] if isinstance(found, list) else found)
        assert keys <= shown, f"{name} [{table}] does not show {sorted(keys - shown)}"


@pytest.mark.parametrize(("name", "toml"), UNITS.items())
def test_exec_start_parses_and_points_at_the_example(name: str, toml: str) -> None:
    service = unit(name)["Service"]
    binary, *argv = shlex.split(service["ExecStart"])
    assert binary == "/opt/stgcmt/bin/stgcmt"
    args = build_parser().parse_args(argv)
    assert args.command == name.removeprefix("stgcmt-").removesuffix(".service")
    assert args.config == Path("/etc", service["ConfigurationDirectory"], toml)
    state = Path("/var/lib", service["StateDirectory"])
    assert Path(service["WorkingDirectory"]) == state
    if args.command == "scp":
        assert load_scp_config(DEPLOY / toml).data_dir.is_relative_to(state)
    else:
        assert load_scu_config(DEPLOY / toml).journal.is_relative_to(state)
    assert (service["User"], service["Restart"]) == ("stgcmt", "on-failure")
    assert service["StandardError"] == "journal"


@pytest.mark.parametrize("name", UNITS)
def test_systemd_analyze_verify(tmp_path: Path, name: str) -> None:
    """systemd's own check, on a copy whose ExecStart is this test's stgcmt (verify insists
    the binary exists): no error, and no warning naming the unit (an unknown key would)."""
    analyze = ensure_debian_package("systemd-analyze", "systemd")
    copy = tmp_path / name
    copy.write_text((DEPLOY / name).read_text().replace("/opt/stgcmt/bin/stgcmt", str(STGCMT)))
    result = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert name not in result.stdout + result.stderr, result.stdout + result.stderr


def test_sysusers_creates_the_user_the_units_run_as(tmp_path: Path) -> None:
    sysusers = ensure_debian_package("systemd-sysusers", "systemd")
    (tmp_path / "etc").mkdir()
    conf = (DEPLOY / "stgcmt.sysusers.conf").resolve()
    subprocess.run([sysusers, f"--root={tmp_path}", str(conf)], check=True, timeout=60)
    user = next(
        line.split(":")
        for line in (tmp_path / "etc" / "passwd").read_text().splitlines()
        if line.startswith("stgcmt:")
    )
    assert user[5:] == ["/var/lib/stgcmt", "/usr/sbin/nologin"]
