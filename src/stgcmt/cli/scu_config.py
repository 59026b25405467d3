"""The SCU's configuration file (``stgcmt send``/``agent --config FILE``) and the network flags
shared by both: the file gives our AE title, listener, journal, trusted reporters and named
archives with their profiles; flags given on the command line override it."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

from stgcmt.cli.common import add_dimse_timeout_flags, fail, setting
from stgcmt.config import (
    ConfigError,
    PeerTimeouts,
    RemoteAE,
    ScuConfig,
    Timeouts,
    load_scu_config,
)
from stgcmt.scu import DEFAULT_AET, Reporter

TIMEOUT_FLAGS = {"connect": "connect_timeout", "acse": "acse_timeout", "dimse": "dimse_timeout"}


def add_scu_config_flags(parser: argparse.ArgumentParser) -> None:
    """``--config`` and the network flags (DCMTK's -to/-ta/-td, ``--max-pdu``)."""
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE.toml",
        help="SCU configuration file ([scu], [[archive]], [tls], [timeouts]); flags override it",
    )
    group = parser.add_argument_group("network")
    add_dimse_timeout_flags(group)
    group.add_argument(
        "--max-pdu",
        type=setting("ScuConfig", "max_pdu"),
        metavar="N",
        help="largest PDU we accept, advertised on our associations (default 65536)",
    )


def _flag_timeouts(args: argparse.Namespace) -> dict[str, float]:
    given = {key: getattr(args, flag, None) for key, flag in TIMEOUT_FLAGS.items()}
    return {key: value for key, value in given.items() if value is not None}


def apply_scu_config(args: argparse.Namespace, *, archive: bool) -> int | None:
    """Fill what the flags left unset from ``--config`` (and the defaults); with ``archive``,
    resolve ``args.archive`` (a configured name or ``AET@HOST:PORT``) into a :class:`RemoteAE`
    whose profile carries the timeouts and maximum PDU to use. Exit status 3 on an error."""
    try:
        config = load_scu_config(args.config) if args.config else ScuConfig()
        _fill(args, config)
        if archive:
            args.archive = _archive(args, config)
    except ConfigError as exc:
        return fail(args, str(exc))
    return None


def _fill(args: argparse.Namespace, config: ScuConfig) -> None:
    args.aet = args.aet or config.aet or DEFAULT_AET
    for flag, key in (("journal", "journal"),):
        if getattr(args, flag) is None:
            setattr(args, flag, getattr(config, key))
    tls: dict[str, Any] = {"cert": "tls_cert", "key": "tls_key", "ca": "tls_ca"}
    for key, flag in tls.items():
        if getattr(args, flag) is None:
            setattr(args, flag, getattr(config.tls, key))
    if args.tls_require_client_cert is None and config.tls.require_client_cert:
        args.tls_require_client_cert = True
    if not args.reporter:
        where = f"{args.config} [scu] reporters"
        args.reporter = [
            _reporter(text, f"{where}[{i}]") for i, text in enumerate(config.reporters)
        ]
    args.reporter = [*args.reporter, *_archive_hosts(config)]
    args.timeouts = replace(config.timeouts, **_flag_timeouts(args)).over(Timeouts())
    args.max_pdu_flag = args.max_pdu
    args.max_pdu = args.max_pdu or config.max_pdu
    args.scu_config = config


def _archive_hosts(config: ScuConfig) -> list[Reporter]:
    """An archive's ``extra_hosts``: more addresses its AE title may report from."""
    return [
        Reporter(archive.remote.aet, host)
        for archive in config.archives
        for host in archive.remote.profile.extra_hosts
    ]


def _reporter(text: str, where: str) -> Reporter:
    try:
        return Reporter.parse(text)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _archive(args: argparse.Namespace, config: ScuConfig) -> RemoteAE:
    """A configured archive's name or ``AET@HOST:PORT``, with the flags folded into its
    profile (flags over the archive's own keys over the file's ``[scu]``/``[timeouts]``)."""
    text: str = args.archive
    named = config.archive(text)
    if named is not None:
        remote = named.remote
    else:
        try:
            remote = RemoteAE.parse(text)
        except ConfigError as exc:
            names = ", ".join(a.name for a in config.archives)
            known = f" (configured archives: {names})" if names else ""
            raise ConfigError(f"archive {text!r} is not a configured name{known}: {exc}") from None
    profile = remote.profile
    # flags over the archive's own keys over the file's [timeouts]
    chosen = {**_given(profile.timeouts), **_flag_timeouts(args)}
    timeouts: PeerTimeouts = replace(config.timeouts, **chosen)
    max_pdu = args.max_pdu_flag or profile.max_pdu or config.max_pdu
    profile = replace(profile, timeouts=timeouts, max_pdu=max_pdu)
    return replace(remote, profile=profile)


def _given(timeouts: PeerTimeouts) -> dict[str, float]:
    values = {key: getattr(timeouts, key) for key in Timeouts.__dataclass_fields__}
    return {key: value for key, value in values.items() if value is not None}
