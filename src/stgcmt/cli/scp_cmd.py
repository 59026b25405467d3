"""``stgcmt scp``: run the archive."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path

from stgcmt.audit import attach as attach_audit
from stgcmt.cli.common import (
    add_dimse_timeout_flags,
    add_logging_flags,
    add_tls_flags,
    ae_title,
    at_least_one,
    count,
    fail,
    port_number,
    remote_ae,
    seconds,
    setting,
    subcommand,
    tls_overrides,
)
from stgcmt.cli.http_opts import add_http_flag, http_config, start_http
from stgcmt.config import REPORT_ROUTE_CHOICES, VERIFY_CHOICES, ConfigError, load_scp_config
from stgcmt.config.audit import syslog_url
from stgcmt.http import serve_scp
from stgcmt.logs import setup_logging
from stgcmt.scp import DatabaseUnavailable, StorageCommitmentSCP, StorageUnavailable

log = logging.getLogger("stgcmt.cli")

EXAMPLES = """\
  stgcmt scp                                   # AE STGCMT_SCP, port 11112, ./stgcmt-data
  stgcmt scp --remote MODALITY@10.0.0.5:104    # who may store/commit, where reports go
  stgcmt scp --config archive.toml -v
  stgcmt scp --accept-unknown --report-assoc auto --verify size
  stgcmt scp --database postgresql://stgcmt@db.example/archive --data-dir /mnt/archive
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subcommand(subparsers, "scp", "run the Storage Commitment SCP archive", EXAMPLES)
    p.add_argument("--aet", type=ae_title, help="our AE title (default STGCMT_SCP)")
    p.add_argument("--bind", metavar="HOST", help="listen address (default all interfaces)")
    p.add_argument("--port", type=port_number, help="listen port (default 11112)")
    p.add_argument(
        "--reuse-port",
        action="store_true",
        default=None,
        help="bind with SO_REUSEPORT: several nodes on PostgreSQL share the port on one host",
    )
    p.add_argument("--data-dir", type=Path, help="files and index (default ./stgcmt-data)")
    p.add_argument("--config", type=Path, metavar="FILE.toml", help="TOML configuration")
    add_http_flag(p)
    p.add_argument(
        "--remote",
        action="append",
        type=remote_ae,
        default=[],
        metavar="AET@HOST:PORT",
        help="a known peer: may associate, and reports to it go there (repeatable)",
    )
    p.add_argument(
        "--report-assoc",
        choices=REPORT_ROUTE_CHOICES,
        help="where reports go: new association (default, IHE), the requesting one, or auto",
    )
    p.add_argument(
        "--verify",
        choices=VERIFY_CHOICES,
        help="how an instance is checked before it is committed (default checksum)",
    )
    p.add_argument(
        "--accept-unknown",
        action="store_true",
        default=None,
        help="let unlisted AEs store and commit (their reports go on their own association)",
    )
    p.add_argument(
        "--overwrite-duplicates",
        action="store_true",
        default=None,
        help="a repeated SOP Instance UID replaces the stored copy (default: keep the first)",
    )
    p.add_argument(
        "--max-references", type=at_least_one, help="largest N-ACTION accepted (0213H above)"
    )
    p.add_argument("--retry-start", type=seconds, metavar="S", help="first retry delay (default 5)")
    p.add_argument(
        "--retry-cap", type=seconds, metavar="S", help="longest retry delay (default 600)"
    )
    p.add_argument(
        "--give-up-after",
        type=seconds,
        metavar="S",
        help="mark a report given up when this old (default 604800, one week)",
    )
    p.add_argument(
        "--max-associations", type=at_least_one, help="simultaneous associations (default 32)"
    )
    p.add_argument(
        "--any-host",
        dest="check_host",
        action="store_false",
        default=None,
        help="accept a known AE from any address (default: only from its configured host)",
    )
    p.add_argument(
        "--max-store-bytes",
        type=count,
        metavar="N",
        help="store quota; C-STORE beyond it gets 0xA700 out of resources (default none)",
    )
    add_database_flags(p)
    add_limit_flags(p)
    add_timeout_flags(p)
    add_tls_flags(p)
    add_audit_flag(p)
    add_logging_flags(p)
    p.set_defaults(run=run)


def add_audit_flag(p: argparse.ArgumentParser) -> None:
    """``--audit URL``: where the IHE ATNA audit trail goes (``[audit]`` has the rest)."""
    p.add_argument(
        "--audit",
        type=audit_url,
        metavar="URL",
        help="send the IHE ATNA audit trail (DICOM PS3.15 A.5) as syslog to udp://HOST:PORT"
        " or tls://HOST:PORT; TLS files, a local file: [audit] in --config",
    )


def audit_url(text: str) -> str:
    try:
        return syslog_url(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_database_flags(p: argparse.ArgumentParser) -> None:
    """PostgreSQL instead of SQLite: the nodes of one archive share --aet, --database and
    --data-dir (docs/deployment.md)."""
    p.add_argument(
        "--database",
        metavar="URL",
        help="PostgreSQL libpq URL shared by every node, e.g. postgresql://stgcmt@db/archive or"
        " postgresql://stgcmt@/archive?host=/run/postgresql (default: SQLite in --data-dir)",
    )
    p.add_argument(
        "--node",
        metavar="NAME",
        help="this node's name in the shared journal (default HOSTNAME:PORT)",
    )


def add_limit_flags(p: argparse.ArgumentParser) -> None:
    """What one peer may make the SCP hold (README: Security and limits)."""
    p.add_argument(
        "--max-pdu",
        type=setting("ScpConfig", "max_pdu"),
        metavar="N",
        help="Maximum PDU Length we advertise, 1024 to 4294967295 (never unlimited); longer"
        " P-DATA-TF PDUs are aborted (default 65536)",
    )
    p.add_argument(
        "--max-pending-associations",
        type=at_least_one,
        metavar="N",
        help="connections not yet associated; past it the oldest is dropped (default 64)",
    )
    p.add_argument(
        "--max-dataset-bytes",
        type=setting("ScpConfig", "max_dataset_bytes"),
        metavar="N",
        help="largest data set held in memory; a larger C-STORE gets 0xA700 (default 1 GiB)",
    )


def add_timeout_flags(p: argparse.ArgumentParser) -> None:
    """DCMTK's timeout flags (-ta, -td, -to), plus the three that bound a slow or silent peer."""
    add_dimse_timeout_flags(p)
    p.add_argument(
        "--network-timeout",
        type=seconds,
        metavar="S",
        help="abort an association on which no whole PDU arrives for this long (default 120)",
    )
    p.add_argument(
        "--associate-rq-timeout",
        type=seconds,
        metavar="S",
        help="a new connection must send its A-ASSOCIATE-RQ within this (default 10)",
    )
    p.add_argument(
        "--pdu-timeout",
        type=seconds,
        metavar="S",
        help="a PDU must arrive whole within this from its first byte (default 30)",
    )


def run(args: argparse.Namespace) -> int:
    setup_logging(args.verbose, args.log_file)
    try:
        config = load_scp_config(
            args.config,
            aet=args.aet,
            bind=args.bind,
            port=args.port,
            reuse_port=args.reuse_port,
            data_dir=args.data_dir,
            remotes=args.remote,
            report_assoc=args.report_assoc,
            verify=args.verify,
            accept_unknown=args.accept_unknown,
            overwrite_duplicates=args.overwrite_duplicates,
            max_references=args.max_references,
            max_associations=args.max_associations,
            check_host=args.check_host,
            max_store_bytes=args.max_store_bytes,
            max_pdu=args.max_pdu,
            max_pending_associations=args.max_pending_associations,
            max_dataset_bytes=args.max_dataset_bytes,
            tls=tls_overrides(args),
            audit={"syslog": args.audit},
            database={"url": args.database, "node": args.node},
            timeouts={
                "acse": args.acse_timeout,
                "dimse": args.dimse_timeout,
                "connect": args.connect_timeout,
                "network": args.network_timeout,
                "associate_rq": args.associate_rq_timeout,
                "pdu": args.pdu_timeout,
            },
            retry={
                "start": args.retry_start,
                "cap": args.retry_cap,
                "give_up_after": args.give_up_after,
            },
        )
        http = http_config(config.http, args)
        scp = StorageCommitmentSCP(config)
        audit = attach_audit(config.audit, scp.events, config.aet)
        scp.start()
        try:
            web = start_http(serve_scp, scp, http)
        except OSError:
            scp.stop()
            raise
    except StorageUnavailable as exc:
        return fail(args, f"cannot start the SCP: {exc} (--data-dir)")
    except DatabaseUnavailable as exc:
        fail(args, f"cannot start the SCP: {exc}")
        return 1  # not a configuration error: the database may come back, restart us then
    except (ConfigError, OSError) as exc:
        return fail(args, f"cannot start the SCP: {exc}")
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    log.info("shutting down")
    if web is not None:
        web.stop()
    scp.stop()
    audit.close()
    return 0
