"""Peers, defaults and TOML configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from stgcmt.config import ConfigError, RemoteAE, RetryPolicy, load_scp_config


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


def test_unknown_toml_key_is_reported(tmp_path: Path):
    path = tmp_path / "c.toml"
    path.write_text("[scp]\nport_number = 1\n")
    with pytest.raises(ConfigError, match="port_number"):
        load_scp_config(path)


def test_backoff_grows_to_cap():
    retry = RetryPolicy(start=1, cap=10)
    assert [retry.delay(n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
