"""``[audit]`` in the SCP's and the SCU's files, and ``--audit URL``: what is accepted, and
what is refused with a message that says what to write."""

from __future__ import annotations

from pathlib import Path

import pytest

from stgcmt.config import ConfigError, load_scp_config, load_scu_config
from stgcmt.config.audit import AuditConfig, SyslogCollector


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("udp://127.0.0.1", SyslogCollector("udp", "127.0.0.1", 514)),
        ("tls://audit.example:6515", SyslogCollector("tls", "audit.example", 6515)),
        ("TLS://[::1]", SyslogCollector("tls", "::1", 6514)),
    ],
)
def test_collector_urls(url: str, expected: SyslogCollector) -> None:
    assert SyslogCollector.parse(url) == expected
    assert SyslogCollector.parse(str(expected)) == expected


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("tcp://host:514", "write udp://HOST:PORT or tls://HOST:PORT"),
        ("udp://host:99999", "the port is not 1 to 65535"),
        ("udp://:514", "no host"),
        ("tls://host:6514/path", "no path"),
        ("host:514", "write udp://"),
    ],
)
def test_bad_collector_urls(url: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        load_scp_config(None, audit={"syslog": url})


def test_the_scp_file(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    path = tmp_path / "scp.toml"
    path.write_text(
        f'[audit]\nsyslog = "tls://127.0.0.1"\nca = "{ca}"\nfile = "{tmp_path / "a.log"}"\n'
        'source_id = "SITE-A"\n'
    )
    config = load_scp_config(path)
    assert config.audit == AuditConfig(
        "tls://127.0.0.1:6514", ca, None, None, tmp_path / "a.log", "SITE-A"
    )
    flag = load_scp_config(path, audit={"syslog": "tls://10.0.0.1:7000"})
    assert flag.audit.syslog == "tls://10.0.0.1:7000" and flag.audit.ca == ca


def test_the_scu_file(tmp_path: Path) -> None:
    path = tmp_path / "scu.toml"
    path.write_text('[audit]\nsyslog = "udp://127.0.0.1:5514"\n')
    assert load_scu_config(path).audit.collector == SyslogCollector("udp", "127.0.0.1", 5514)
    path.write_text('[audit]\nsyslog = "udp://h"\ncert = "c.pem"\n')
    with pytest.raises(ConfigError, match=r"\[audit\] cert: only for a tls:// syslog collector"):
        load_scu_config(path)


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ({"syslog": "tls://h", "cert": "c.pem"}, "key: give both"),
        ({"syslog": "tls://h", "ca": "/no/such/ca.pem"}, "ca: no such file"),
        ({"file": "a.log", "ca": "ca.pem"}, "ca: only for a tls://"),
        ({"sylog": "udp://h"}, "unknown key"),
    ],
)
def test_refused_tables(tmp_path: Path, table: dict[str, str], words: str) -> None:
    path = tmp_path / "scp.toml"
    path.write_text("[audit]\n" + "".join(f'{k} = "{v}"\n' for k, v in table.items()))
    with pytest.raises(ConfigError, match=words):
        load_scp_config(path)
