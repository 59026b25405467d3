"""``[http]``: the address, half credentials or certificates, and no credentials off loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from stgcmt.config import ConfigError, load_scp_config, load_scu_config
from stgcmt.config.http import HttpConfig


@pytest.mark.parametrize(
    ("listen", "address"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("8080", ("127.0.0.1", 8080)),
        (":8080", ("127.0.0.1", 8080)),
        ("[::1]:8443", ("::1", 8443)),
        ("localhost:0", ("localhost", 0)),
    ],
)
def test_addresses(listen, address):
    assert HttpConfig(listen=listen).checked().address() == address


@pytest.mark.parametrize(
    "listen",
    ["", "host", "127.0.0.1:", "127.0.0.1:http", "1.2.3.4:70000", "127.0.0.1:\u00b2", "\u00b2"],
)
def test_bad_addresses(listen):
    with pytest.raises(ConfigError, match="HOST:PORT"):
        HttpConfig(listen=listen).checked()


@pytest.mark.parametrize("listen", ["0.0.0.0:8080", "[::]:8080", "10.0.0.5:80", "pacs:8080"])
def test_public_address_needs_credentials(listen):
    with pytest.raises(ConfigError, match="refusing to serve the HTTP API .* without credentials"):
        HttpConfig(listen=listen).checked()
    assert HttpConfig(listen=listen, token="t").checked()
    assert HttpConfig(listen=listen, username="u", password="p").checked()
    with pytest.raises(ConfigError, match="username/password: give both"):
        HttpConfig(listen=listen, username="u", token="t").checked()


def test_https_needs_both_files(tmp_path: Path):
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    with pytest.raises(ConfigError, match="key: give both"):
        HttpConfig(listen="127.0.0.1:1", cert=cert).checked()
    with pytest.raises(ConfigError, match="no such file"):
        HttpConfig(listen="127.0.0.1:1", cert=cert, key=tmp_path / "none.pem").checked()


def test_http_table_in_both_files(tmp_path: Path):
    scp = tmp_path / "scp.toml"
    scp.write_text('[http]\nlisten = "0.0.0.0:8080"\ntoken = "s3"\nmetrics_token = "m"\n')
    http = load_scp_config(scp).http
    assert (http.listen, http.token, http.metrics_token) == ("0.0.0.0:8080", "s3", "m")
    scu = tmp_path / "scu.toml"
    scu.write_text('[http]\nlisten = "0.0.0.0:8081"\n')
    with pytest.raises(ConfigError, match=r"scu.toml \[http\]: refusing"):
        load_scu_config(scu)
    scu.write_text('[http]\nlisten = "127.0.0.1:8081"\ntokn = "x"\n')
    with pytest.raises(ConfigError, match="tokn: unknown key"):
        load_scu_config(scu)
