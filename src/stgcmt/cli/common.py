"""Argument helpers shared by the sub-commands."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import ConfigError, RemoteAE, TlsConfig, validate_aet

EXIT_USAGE = 3


def remote_ae(text: str) -> RemoteAE:
    try:
        return RemoteAE.parse(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def ae_title(text: str) -> str:
    try:
        return validate_aet(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_logging_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more detail (-vv: DIMSE/ACSE too)"
    )
    parser.add_argument("--log-file", type=Path, help="also write the log to this file")


def subcommand(
    subparsers: argparse._SubParsersAction, name: str, summary: str, examples: str
) -> argparse.ArgumentParser:
    return subparsers.add_parser(
        name,
        help=summary,
        description=summary,
        epilog="examples:\n" + examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_tls_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("DICOM TLS")
    group.add_argument("--tls-cert", type=Path, metavar="PEM", help="our certificate (PEM)")
    group.add_argument("--tls-key", type=Path, metavar="PEM", help="its private key (PEM)")
    group.add_argument(
        "--tls-ca",
        type=Path,
        metavar="PEM",
        help="CA bundle that peers' certificates must chain to",
    )
    group.add_argument(
        "--tls-require-client-cert",
        action="store_true",
        default=None,
        help="refuse peers without a certificate from --tls-ca",
    )


def tls_overrides(args: argparse.Namespace) -> dict[str, object]:
    return {
        "cert": args.tls_cert,
        "key": args.tls_key,
        "ca": args.tls_ca,
        "require_client_cert": args.tls_require_client_cert,
    }


def tls_config(args: argparse.Namespace) -> TlsConfig:
    """The TLS settings given on the command line (for commands without a config file)."""
    return TlsConfig(**{k: v for k, v in tls_overrides(args).items() if v is not None})
