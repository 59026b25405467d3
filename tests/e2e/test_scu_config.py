"""``stgcmt send``/``agent --config``: named archives with profiles, flags over the file, and
the same strict messages as the SCP's file (exit 3 naming file, table and key)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stgcmt.config import ConfigError, load_scp_config, load_scu_config

from support.common import LOCALHOST, free_port, remote, stgcmt

SCU = "CT1"


def write(tmp_path: Path, text: str, name: str = "scu.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_send_to_a_named_archive_from_the_file(scp_factory, instances, tmp_path):
    listen = free_port()
    scp = scp_factory(remotes=(remote(SCU, listen),), report_assoc="new")
    config = write(
        tmp_path,
        f'[scu]\naet = "{SCU}"\nlisten_bind = "{LOCALHOST}"\nlisten_port = {listen}\n'
        f'journal = "{tmp_path / "j.sqlite"}"\nmax_pdu = 32768\n\n'
        f'[[archive]]\nname = "pacs"\naet = "STGCMT_SCP"\nhost = "{LOCALHOST}"\n'
        f'port = {scp.port}\ntransfer_syntaxes = ["implicit"]\n'
        "[archive.timeouts]\nacse = 5.0\n",
    )
    run = stgcmt("send", "pacs", *instances(2), "--config", config, "--json", home=tmp_path)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["journal"] == str(tmp_path / "j.sqlite")
    assert result["files_by_state"] == {"committed": 2}


def test_flags_override_the_file(scp_factory, instances, tmp_path):
    """The file names another AE title and a dead port; flags win (our AE title, the archive
    given as AET@HOST:PORT, the journal)."""
    scp = scp_factory(remotes=(remote(SCU, 1),), report_assoc="same")
    config = write(
        tmp_path,
        '[scu]\naet = "WRONG"\n\n[[archive]]\nname = "pacs"\naet = "STGCMT_SCP"\n'
        f'host = "{LOCALHOST}"\nport = {free_port()}\n',
    )
    journal = tmp_path / "flag.sqlite"
    archive = f"STGCMT_SCP@{LOCALHOST}:{scp.port}"
    args = ("--config", config, "--aet", SCU, "--journal", journal, "--report-assoc", "same")
    run = stgcmt("send", archive, *instances(1), *args, "-ta", "5", "--json", home=tmp_path)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["journal"] == str(journal)


def test_unknown_archive_name_is_a_usage_error(tmp_path, instances):
    config = write(tmp_path, '[[archive]]\nname = "pacs"\naet = "A"\nhost = "h"\nport = 104\n')
    run = stgcmt("send", "elsewhere", *instances(1), "--config", config, home=tmp_path)
    assert run.returncode == 3
    assert "'elsewhere' is not a configured name (configured archives: pacs)" in run.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[scu]\ncolour = 1\n", "[scu] colour: unknown key"),
        ("[scu]\nlisten_port = 0\n", "[scu] listen_port: expected an integer from 1 to 65535"),
        (
            '[[archive]]\nname = "p"\naet = "A"\nhost = "h"\nport = 1\nmax_pdu = 10\n',
            "[[archive]] #1 max_pdu: expected an integer from 1024 to 4294967295, got the"
            " integer 10",
        ),
        (
            '[[archive]]\nname = "p"\naet = "A"\nhost = "h"\nport = 1\n'
            'transfer_syntaxes = ["jpeg"]\n',
            "[[archive]] #1 transfer_syntaxes[0]: unknown transfer syntax 'jpeg'",
        ),
        (
            '[[archive]]\nname = "p"\naet = "A"\nhost = "h"\nport = 1\n'
            '[archive.timeouts]\nacse = "5"\n',
            '[[archive]] #1 timeouts acse: expected a number greater than 0, got the string "5"',
        ),
        (
            '[[archive]]\naet = "A"\nhost = "h"\nport = 1\n',
            "[[archive]] #1 name: missing (required)",
        ),
    ],
)
def test_invalid_scu_file_exits_3_naming_file_table_and_key(tmp_path, instances, text, message):
    config = write(tmp_path, text)
    run = stgcmt("send", "A@h:1", *instances(1), "--config", config, home=tmp_path)
    assert run.returncode == 3
    assert f"{config} {message}" in run.stderr
    agent = stgcmt("agent", "--config", config, home=tmp_path)
    assert agent.returncode == 3 and f"{config} {message}" in agent.stderr


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('report_assoc = "later"', '#1 report_assoc: expected one of "new", "same", "auto"'),
        ('check_host = "no"', '#1 check_host: expected true or false, got the string "no"'),
        ('extra_hosts = "10.0.0.1"', "#1 extra_hosts: expected an array"),
        ("tls = true", "#1 tls: true needs tls_ca or tls_cert"),
        ('tls_ca = "/nonexistent.pem"', "#1 tls_ca: no such file /nonexistent.pem"),
        ("max_pdu = 1.5", "#1 max_pdu: expected an integer from 1024"),
        ("timeouts = 5", "#1 timeouts: expected a table, got the integer 5"),
        ("colour = 1", "#1 colour: unknown key (known keys: aet, check_host, extra_hosts,"),
    ],
)
def test_invalid_scp_profile_values_exit_3(tmp_path, entry, message):
    config = write(
        tmp_path, f'[[remote]]\naet = "CT1"\nhost = "h"\nport = 104\n{entry}\n', "scp.toml"
    )
    with pytest.raises(ConfigError, match="^" + str(config).replace(".", r"\.")) as info:
        load_scp_config(config)
    assert f"{config} [[remote]] {message}" in str(info.value)
    run = stgcmt("scp", "--config", config, "--data-dir", tmp_path / "d", home=tmp_path)
    assert run.returncode == 3 and message in run.stderr


def test_profile_keys_load_from_the_scp_file(tmp_path):
    config = write(
        tmp_path,
        '[scp]\nreport_assoc = "new"\n[[remote]]\naet = "CT1"\nhost = "h"\nport = 104\n'
        'transfer_syntaxes = ["explicit", "1.2.840.10008.1.2"]\nmax_pdu = 16384\n'
        'report_assoc = "same"\ncheck_host = false\nextra_hosts = ["10.0.0.2"]\ntls = false\n'
        "[remote.timeouts]\ndimse = 9\n",
        "scp.toml",
    )
    loaded = load_scp_config(config)
    profile = loaded.remotes[0].profile
    assert profile.transfer_syntaxes == ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")
    assert (profile.max_pdu, profile.check_host, profile.extra_hosts) == (
        16384,
        False,
        ("10.0.0.2",),
    )
    assert loaded.report_route("CT1") == "same" and loaded.report_assoc == "new"
    assert profile.timeouts.over(loaded.timeouts).dimse == 9.0
    assert profile.timeouts.over(loaded.timeouts).acse == loaded.timeouts.acse
    plain = load_scp_config(write(tmp_path, '[[remote]]\naet = "A"\nhost = "h"\nport = 1\n'))
    assert plain.remotes[0] == plain.remotes[0].parse("A@h:1")


def test_peer_timeouts_have_the_keys_of_timeouts():
    from dataclasses import fields

    from stgcmt.config import PeerTimeouts, Timeouts

    assert [f.name for f in fields(PeerTimeouts)] == [f.name for f in fields(Timeouts)]


def test_scu_file_loads(tmp_path):
    config = load_scu_config(
        write(tmp_path, '[scu]\nreporters = ["RPT@10.0.0.9"]\n[timeouts]\nconnect = 3\n')
    )
    assert config.reporters == ("RPT@10.0.0.9",) and config.timeouts.connect == 3.0


def test_archive_timeouts_and_the_same_flag_together(scp_factory, instances, tmp_path):
    """The archive's own [archive.timeouts] key and the matching flag: the flag wins (this
    used to crash with "got multiple values for keyword argument")."""
    scp = scp_factory(remotes=(remote(SCU, 1),), report_assoc="same")
    config = write(
        tmp_path,
        f'[scu]\naet = "{SCU}"\njournal = "{tmp_path / "j.sqlite"}"\n\n'
        f'[[archive]]\nname = "pacs"\naet = "STGCMT_SCP"\nhost = "{LOCALHOST}"\n'
        f"port = {scp.port}\n[archive.timeouts]\nconnect = 2.0\nacse = 5.0\n",
    )
    args = ("--config", config, "--report-assoc", "same", "-to", "3", "-ta", "6", "--json")
    run = stgcmt("send", "pacs", *instances(1), *args, home=tmp_path)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["files_by_state"] == {"committed": 1}


@pytest.mark.parametrize("entry", ['report_assoc = "new"', "check_host = false"])
def test_scp_only_profile_keys_are_refused_in_an_archive(tmp_path, instances, entry):
    """Keys that only the archive side can act on are refused, not accepted and ignored."""
    key = entry.split()[0]
    config = write(tmp_path, f'[[archive]]\nname = "p"\naet = "A"\nhost = "h"\nport = 1\n{entry}\n')
    run = stgcmt("send", "p", *instances(1), "--config", config, home=tmp_path)
    assert run.returncode == 3
    assert f"{config} [[archive]] #1 {key}: not an archive setting" in run.stderr


def test_archive_extra_hosts_may_report(tmp_path):
    """An archive's extra_hosts are addresses its AE title may report from: the agent
    names them among its reporters when it starts."""
    port = free_port()
    config = write(
        tmp_path,
        f'[scu]\naet = "{SCU}"\nlisten_bind = "{LOCALHOST}"\nlisten_port = {port}\n'
        f'journal = "{tmp_path / "j.sqlite"}"\n\n'
        '[[archive]]\nname = "pacs"\naet = "PACS"\nhost = "127.0.0.1"\nport = 104\n'
        'extra_hosts = ["127.0.0.2"]\n',
    )
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    agent = subprocess.Popen(
        [sys.executable, "-m", "stgcmt", "agent", "--config", str(config)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        started = ""
        while "listening" not in started:
            line = agent.stderr.readline()
            assert line, f"the agent stopped: {started}"
            started += line
        assert "PACS@127.0.0.2" in started
    finally:
        agent.terminate()
        agent.wait(timeout=20)
