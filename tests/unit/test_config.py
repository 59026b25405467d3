"""Peers, defaults and TOML configuration."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import get_type_hints

import pytest

from stgcmt import ul as net
from stgcmt.config import (
    ConfigError,
    RemoteAE,
    RetryPolicy,
    ScpConfig,
    Timeouts,
    load_scp_config,
)

from support.common import LOCALHOST, free_port, wait_for


def test_remote_ae_parse():
    assert RemoteAE.parse("MODALITY@10.1.2.3:104") == RemoteAE("MODALITY", "10.1.2.3", 104)
    assert str(RemoteAE.parse("A@[::1]:11112")) == "A@::1:11112"


@pytest.mark.parametrize("text", ["MODALITY", "MOD@host", "MOD@host:x", "@h:1", "A" * 17 + "@h:1"])
def test_remote_ae_errors(text):
    with pytest.raises(ConfigError):
        RemoteAE.parse(text)


def test_zero_config_defaults():
    config = load_scp_config(None)
    assert (config.aet, config.port, config.data_dir) == ("STGCMT_SCP", 11112, Path("stgcmt-data"))
    assert (config.report_assoc, config.verify, config.accept_unknown) == ("new", "checksum", False)


def test_toml_then_flags(tmp_path: Path):
    path = tmp_path / "c.toml"
    path.write_text(
        """
[scp]
aet = "ARCHIVE"
port = 2000
verify = "size"
remote = []

[[remote]]
aet = "CT1"
host = "127.0.0.1"
port = 104

[retry]
start = 1.0
""".replace("remote = []\n", "")
    )
    config = load_scp_config(path, port=3000, remotes=[RemoteAE.parse("MR1@127.0.0.1:105")])
    assert (config.aet, config.port, config.verify) == ("ARCHIVE", 3000, "size")
    assert [r.aet for r in config.remotes] == ["CT1", "MR1"]
    assert config.retry.start == 1.0 and config.retry.cap == RetryPolicy().cap


def test_reuse_port_needs_a_shared_database_and_a_node_name(tmp_path: Path):
    """Nodes sharing a port on one SQLite journal (no leases) would each deliver every
    report, under one default node name they would share leases: refused, whether the
    database and the name come from the file or from the flags."""
    path = tmp_path / "c.toml"
    path.write_text("[scp]\nreuse_port = true\n")
    with pytest.raises(ConfigError, match=r"reuse_port.*\[database\] url \(--database\)"):
        load_scp_config(path)
    url = "postgresql://stgcmt@/archive?host=/run/postgresql"
    with pytest.raises(ConfigError, match=r"names of their own.*\[database\] node \(--node\)"):
        load_scp_config(path, database={"url": url})
    config = load_scp_config(path, database={"url": url, "node": "pacs1-a"})
    assert config.reuse_port and config.database.url == url
    shared = load_scp_config(None, reuse_port=True, database={"url": url, "node": "pacs1-b"})
    assert shared.reuse_port
    assert not load_scp_config(None).reuse_port


def test_unknown_toml_key_is_reported(tmp_path: Path):
    path = tmp_path / "c.toml"
    path.write_text("[scp]\nport_number = 1\n")
    with pytest.raises(ConfigError, match="port_number"):
        load_scp_config(path)


def test_backoff_grows_to_cap():
    retry = RetryPolicy(start=1, cap=10)
    assert [retry.delay(n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


# -- strictness: every table, key and value is checked; messages name file, table and key ----

BAD_CONFIGS = [
    (
        '[scp]\naccept_unknown = "no"\n',
        '[scp] accept_unknown: expected true or false, got the string "no"',
    ),
    (
        '[scp]\nport = "abc"\n',
        '[scp] port: expected an integer from 1 to 65535, got the string "abc"',
    ),
    ("[scp]\nport = 0\n", "[scp] port: expected an integer from 1 to 65535, got the integer 0"),
    (
        "[scp]\nport = 70000\n",
        "[scp] port: expected an integer from 1 to 65535, got the integer 70000",
    ),
    (
        '[timeouts]\nacse = "fast"\n',
        '[timeouts] acse: expected a number greater than 0, got the string "fast"',
    ),
    ("[timeouts]\nconnect = 0\n", "[timeouts] connect: expected a number greater than 0"),
    (
        "[scp]\nmax_store_bytes = -1\n",
        "[scp] max_store_bytes: expected an integer of at least 0, got the integer -1",
    ),
    ("[scp]\ncheck_host = 1\n", "[scp] check_host: expected true or false, got the integer 1"),
    ("[scp]\nmax_references = 0\n", "[scp] max_references: expected an integer of at least 1"),
    (
        "[scp]\nmax_associations = true\n",
        "[scp] max_associations: expected an integer of at least 1, got true",
    ),
    (
        '[scp]\nverify = "md5"\n',
        '[scp] verify: expected one of "exists", "size", "checksum", got the string "md5"',
    ),
    ('[scp]\nreport_assoc = "sometimes"\n', "[scp] report_assoc: expected one of"),
    ("[scp]\ndata_dir = 3\n", "[scp] data_dir: expected a path (a string), got the integer 3"),
    ("[scp]\nport_number = 1\n", "[scp] port_number: unknown key"),
    ("[foo]\nx = 1\n", "[foo]: unknown table"),
    (
        '[retry]\nstart = "soon"\n',
        '[retry] start: expected a number greater than 0, got the string "soon"',
    ),
    ("[retry]\nstart = 10.0\ncap = 5.0\n", "[retry] cap: expected a number of at least start (10)"),
    ("[retry]\nbackoff = 2\n", "[retry] backoff: unknown key"),
    ("[tls]\ncolour = 1\n", "[tls] colour: unknown key"),
    ('[tls]\nrequire_client_cert = "yes"\n', "[tls] require_client_cert: expected true or false"),
    ("[timeouts]\nidle = 1.0\n", "[timeouts] idle: unknown key"),
    (
        '[[remote]]\naet = "A"\nhost = "h"\nport = 104\n\n[[remote]]\naet = "B"\nhost = "h"\n'
        'port = 104\ncolour = "red"\n',
        "[[remote]] #2 colour: unknown key",
    ),
    (
        '[[remote]]\naet = "A"\nhost = "h"\nport = "104"\n',
        '[[remote]] #1 port: expected an integer from 1 to 65535, got the string "104"',
    ),
    ('[[remote]]\naet = "A"\nhost = "h"\n', "[[remote]] #1 port: missing"),
    ('remote = ["nonsense"]\n', "[[remote]] #1: peer 'nonsense' is not written AET@HOST:PORT"),
    ("scp = 1\n", "scp: expected a table [scp], got the integer 1"),
    ('[scp]\naet = "A\\\\B"\n', "[scp] aet: invalid AE title"),
]


@pytest.mark.parametrize(("text", "message"), BAD_CONFIGS, ids=[m for _, m in BAD_CONFIGS])
def test_bad_config_names_file_table_and_key(tmp_path: Path, text: str, message: str):
    path = tmp_path / "stgcmt.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_scp_config(path)
    assert str(caught.value).startswith(f"{path} ")
    assert message in str(caught.value)


FULL_CONFIG = """
[scp]
aet = "ARCHIVE"
bind = "127.0.0.1"
port = 11112
data_dir = "/srv/stgcmt"
report_assoc = "auto"
verify = "size"
accept_unknown = false
overwrite_duplicates = true
max_references = 1000
max_associations = 4
check_host = false
max_store_bytes = 1000000

[[remote]]
aet = "CT1"
host = "10.0.0.21"
port = 104

[retry]
start = 1
cap = 60.0
give_up_after = 3600.0

[timeouts]
acse = 30
dimse = 60.0
network = 120.0
connect = 10.0
"""


def test_valid_full_config_loads(tmp_path: Path):
    path = tmp_path / "stgcmt.toml"
    path.write_text(FULL_CONFIG)
    config = load_scp_config(path)
    assert (config.aet, config.bind, config.report_assoc, config.verify) == (
        "ARCHIVE",
        "127.0.0.1",
        "auto",
        "size",
    )
    assert config.data_dir == Path("/srv/stgcmt") and config.check_host is False
    assert [str(r) for r in config.remotes] == ["CT1@10.0.0.21:104"]
    assert config.retry.start == 1.0 and isinstance(config.retry.start, float)
    assert config.timeouts.acse == 30.0


def test_python_api_may_pick_a_free_port_but_is_checked_too():
    assert ScpConfig(port=0).checked().port == 0
    with pytest.raises(ConfigError, match=r"\[scp\] accept_unknown: expected true or false"):
        ScpConfig(accept_unknown="no").checked()  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"\[timeouts\] acse: expected a number greater than 0"):
        ScpConfig(timeouts=Timeouts(acse=-1)).checked()
    with pytest.raises(ConfigError, match=r"\[scp\] port: expected an integer from 1 to 65535"):
        load_scp_config(None, port=0)


def test_new_dataclass_fields_are_validated_without_new_code():
    """The checks are driven by the annotations: any int field gets "not negative" at least."""
    for name, hint in get_type_hints(ScpConfig).items():
        if hint is int:
            with pytest.raises(ConfigError, match=rf"\[scp\] {name}: expected an integer"):
                replace(ScpConfig(), **{name: -1}).checked()
    for name in get_type_hints(Timeouts):
        with pytest.raises(ConfigError, match=rf"\[timeouts\] {name}: expected a number"):
            ScpConfig(timeouts=replace(Timeouts(), **{name: 0})).checked()


CLI_CASES = [
    (
        '[scp]\naccept_unknown = "no"\n',
        '[scp] accept_unknown: expected true or false, got the string "no"',
    ),
    (
        '[scp]\nport = "abc"\n',
        '[scp] port: expected an integer from 1 to 65535, got the string "abc"',
    ),
    ('[timeouts]\nacse = "fast"\n', "[timeouts] acse: expected a number greater than 0"),
    ('[[remote]]\naet = "A"\nhost = "h"\nport = 104\nfoo = 1\n', "[[remote]] #1 foo: unknown key"),
]


@pytest.mark.parametrize(("text", "message"), CLI_CASES, ids=[m for _, m in CLI_CASES])
def test_scp_cli_exits_3_on_bad_config(tmp_path: Path, text: str, message: str):
    path = tmp_path / "stgcmt.toml"
    path.write_text(text)
    result = _stgcmt(tmp_path, "scp", "--config", str(path), "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"{path} {message}" in lines[0]


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--port", "0"),
        ("--port", "70000"),
        ("--port", "abc"),
        ("--max-store-bytes", "-1"),
        ("--max-references", "0"),
        ("--retry-start", "0"),
        ("--max-associations", "0"),
        ("--max-pdu", "-1"),
        ("--max-pdu", "6"),
        ("--max-dataset-bytes", "0"),
        ("--max-pending-associations", "0"),
        ("--acse-timeout", "0"),
        ("--pdu-timeout", "-3"),
    ],
)
def test_scp_cli_range_checks_flags(tmp_path: Path, flag: str, value: str):
    result = _stgcmt(tmp_path, "scp", flag, value, "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 3, result.stderr
    assert f"{flag}: expected" in result.stderr


def test_status_json_error_object(tmp_path: Path):
    result = _stgcmt(tmp_path, "status", "--data-dir", str(tmp_path / "none"), "--json")
    assert result.returncode == 3
    assert json.loads(result.stdout)["exit_status"] == 3
    assert len(result.stderr.strip().splitlines()) == 1


def _stgcmt(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stgcmt", *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_scp_limit_and_timeout_flags_take_effect(tmp_path: Path):
    """The flags reach the running SCP: the A-ASSOCIATE-AC advertises --max-pdu."""
    port = free_port()
    argv = [sys.executable, "-m", "stgcmt", "scp", "--port", str(port), "--bind", LOCALHOST]
    argv += ["--data-dir", str(tmp_path / "d"), "--accept-unknown", "--max-pdu", "16384"]
    argv += ["-ta", "5", "-td", "7", "--pdu-timeout", "4", "--max-pending-associations", "3"]
    process = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    try:
        remote = RemoteAE("STGCMT_SCP", LOCALHOST, port)

        def associated() -> net.Association | None:
            try:
                return net.open_association("CT1", remote, net.ContextPlan(echo=True))
            except net.AssociationError:
                return None

        association = wait_for(associated, timeout=20)
        assert association is not None, "the SCP did not start"
        with association:
            assert association._association.peer_max_pdu == 16384
            assert association.c_echo() == 0
    finally:
        process.terminate()
        process.wait(timeout=20)
