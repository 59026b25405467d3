"""``stgcmt echo``: C-ECHO a peer (Verification SCU), like DCMTK's ``echoscu``."""

from __future__ import annotations

import argparse
import json
import sys

from stgcmt.cli.common import (
    add_dimse_timeout_flags,
    add_logging_flags,
    add_tls_flags,
    ae_title,
    at_least_one,
    remote_ae,
    seconds,
    subcommand,
    tls_config,
)
from stgcmt.config import Timeouts
from stgcmt.logs import setup_logging
from stgcmt.scu import DEFAULT_AET
from stgcmt.scu.echo import EchoAttempt, echo

EXAMPLES = """\
  stgcmt echo STGCMT_SCP@pacs:11112                  # as STGCMT_SCU
  stgcmt echo --aet CT1 ARCHIVE@10.0.0.9:104 --repeat 5
  stgcmt echo --aet CT1 -to 3 -ta 5 -td 5 ARCHIVE@pacs:104 --json
  stgcmt echo --aet CT1 --tls-ca ca.pem --tls-cert ct1.pem --tls-key ct1.key ARCHIVE@pacs:2762

Each attempt is its own association (A-ASSOCIATE, C-ECHO, A-RELEASE); the time printed is
association + C-ECHO, from connecting to the response.

exit status:
  0  every C-ECHO answered 0x0000 success
  1  the peer answered but said no: association rejected (the reason in words, e.g. "calling
     AE title not recognised"), Verification not accepted, aborted, a failure status, or no
     C-ECHO response
  2  no DICOM answer: connection refused or timed out, TLS handshake failed, or no answer to
     the association request
  3  usage error
  With --repeat, the worst attempt counts.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subcommand(subparsers, "echo", "C-ECHO a peer: is it there, does it accept us", EXAMPLES)
    p.add_argument("peer", type=remote_ae, metavar="AET@HOST:PORT", help="the peer to echo")
    p.add_argument(
        "--aet", type=ae_title, default=DEFAULT_AET, help=f"our (calling) AE title ({DEFAULT_AET})"
    )
    add_dimse_timeout_flags(p)
    p.add_argument(
        "-r",
        "--repeat",
        type=at_least_one,
        default=1,
        metavar="N",
        help="echo N times, one association each (1)",
    )
    p.add_argument(
        "--interval", type=seconds, default=None, metavar="S", help="seconds between attempts"
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    add_tls_flags(p)
    add_logging_flags(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    setup_logging(args.verbose, args.log_file)
    tls = tls_config(args).checked()
    defaults = Timeouts()
    dimse = args.dimse_timeout or defaults.dimse
    timeouts = Timeouts(
        connect=args.connect_timeout or defaults.connect,
        acse=args.acse_timeout or defaults.acse,
        dimse=dimse,
        network=max(defaults.network, dimse),
    )

    def progress(n: int, attempt: EchoAttempt) -> None:
        if args.json:
            return
        prefix = f"[{n}/{args.repeat}] " if args.repeat > 1 else ""
        if attempt.error is None and attempt.round_trip_ms is not None:
            print(f"{prefix}{args.peer}: {attempt.words} in {attempt.round_trip_ms:.1f} ms")
        else:
            print(f"{prefix}{args.peer}: {attempt.words}", file=sys.stdout)
        sys.stdout.flush()

    result = echo(
        args.aet,
        args.peer,
        repeat=args.repeat,
        interval=args.interval or 0.0,
        timeouts=timeouts,
        tls=tls if tls.enabled else None,
        progress=progress,
    )
    if args.json:
        print(json.dumps(result.as_json(), indent=2))
    elif args.repeat > 1:
        times = result.times()
        summary = f"{len(times)}/{args.repeat} answered"
        if times:
            avg = sum(times) / len(times)
            summary += f", round trip min/avg/max {min(times):.1f}/{avg:.1f}/{max(times):.1f} ms"
        print(summary)
    return result.exit_status
