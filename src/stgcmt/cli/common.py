"""Argument helpers shared by the sub-commands."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stgcmt.config import (
    AT_LEAST_ONE,
    NOT_NEGATIVE,
    POSITIVE,
    RANGES,
    ConfigError,
    Range,
    RemoteAE,
    Timeouts,
    TlsConfig,
    validate_aet,
)

EXIT_USAGE = 3


def _number_flag(kind: type, rng: Range) -> Callable[[str], float]:
    """An argparse ``type=`` that applies the configuration file's range to a flag, so
    ``--port 0`` is refused like ``port = 0`` (argparse usage errors exit 3, see Parser)."""
    word = "an integer" if kind is int else "a number"
    expected = f"{word} {rng.describe(free_port=False)}"

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not rng.admits(value, free_port=False):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
        return value

    parse.__name__ = "int" if kind is int else "float"
    return parse


port_number = _number_flag(int, Range(1, 65535))
count = _number_flag(int, NOT_NEGATIVE)
at_least_one = _number_flag(int, AT_LEAST_ONE)
seconds = _number_flag(float, POSITIVE)


def setting(table: str, key: str) -> Callable[[str], float]:
    """The flag for a configuration key with a range of its own (``RANGES``)."""
    return _number_flag(int, RANGES[(table, key)])


def fail(args: argparse.Namespace, message: str) -> int:
    """Report a usage/start-up error: one line on stderr, and with ``--json`` (where the
    command has it) a JSON error object on stdout so scripts never parse an empty result."""
    prog = " ".join(filter(None, ("stgcmt", getattr(args, "command", None))))
    print(f"{prog}: error: {message}", file=sys.stderr)
    if getattr(args, "json", False):
        print(json.dumps({"error": message, "exit_status": EXIT_USAGE}))
    return EXIT_USAGE


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
    given: dict[str, Any] = {k: v for k, v in tls_overrides(args).items() if v is not None}
    return TlsConfig(**given)


def add_dimse_timeout_flags(parser: argparse._ActionsContainer) -> None:
    """DCMTK's timeout flags, the same on every command: ``-to/--connect-timeout``,
    ``-ta/--acse-timeout``, ``-td/--dimse-timeout`` (unset: the configured or default value)."""
    defaults = Timeouts()
    parser.add_argument(
        "-to",
        "--connect-timeout",
        type=seconds,
        metavar="S",
        help=f"TCP connect timeout for associations we open (default {defaults.connect:g})",
    )
    parser.add_argument(
        "-ta",
        "--acse-timeout",
        type=seconds,
        metavar="S",
        help=f"association request and release timeout (default {defaults.acse:g})",
    )
    parser.add_argument(
        "-td",
        "--dimse-timeout",
        type=seconds,
        metavar="S",
        help=f"DIMSE response timeout (default {defaults.dimse:g})",
    )
