"""``stgcmt agent``: receive late Storage Commitment reports for ``stgcmt send``."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from dataclasses import replace

from stgcmt.audit import attach as attach_audit
from stgcmt.cli.common import (
    add_logging_flags,
    add_tls_flags,
    ae_title,
    fail,
    port_number,
    subcommand,
    tls_config,
)
from stgcmt.cli.http_opts import add_http_flag, http_config, start_http
from stgcmt.cli.scp_cmd import add_audit_flag
from stgcmt.cli.scu_config import add_scu_config_flags, apply_scu_config
from stgcmt.cli.send_cmd import add_journal_flag, add_reporter_flag
from stgcmt.config import ConfigError
from stgcmt.http import serve_agent
from stgcmt.logs import setup_logging
from stgcmt.scu import DEFAULT_AET, DEFAULT_LISTEN_BIND, DEFAULT_PORT, Agent, default_journal_path

log = logging.getLogger("stgcmt.cli")

EXAMPLES = f"""\
  stgcmt agent --aet CT1 --port 11113          # the AE and port the archive reports to
  stgcmt agent --aet CT1 --bind 10.0.0.5 --port 104 --journal /var/lib/ct1/scu.sqlite
  stgcmt agent --aet CT1 --port 11113 --reporter ARCHIVE_RPT@pacs-node2 --reporter QR@10.0.0.9

A report is accepted only from the archive its transaction was sent to (AE title, and an
address its host name resolves to) or from a --reporter; anyone else is rejected
(A-ASSOCIATE-RJ "calling AE title not recognised") and logged with "security:", except that an
association proposing only Verification is accepted from any calling AE (C-ECHO only).

It shares the journal with 'stgcmt send' (default {default_journal_path()}); run send
without --listen (or on another port) while the agent holds the port.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subcommand(subparsers, "agent", "receive late commitment reports and act on them", EXAMPLES)
    p.add_argument("--aet", type=ae_title, default=None, help=f"our AE title ({DEFAULT_AET})")
    p.add_argument("--bind", default=None, metavar="HOST", help="listen address (all interfaces)")
    p.add_argument("--port", type=port_number, default=None, help=f"port ({DEFAULT_PORT})")
    add_reporter_flag(p)
    add_journal_flag(p)
    add_tls_flags(p)
    add_http_flag(p)
    add_scu_config_flags(p)
    add_audit_flag(p)
    add_logging_flags(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    setup_logging(args.verbose, args.log_file)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    if (error := apply_scu_config(args, archive=False)) is not None:
        return error
    config = args.scu_config
    port = args.port or config.listen_port or DEFAULT_PORT
    try:
        tls = tls_config(args).checked()
        http = http_config(config.http, args)
        agent = Agent(
            args.journal or default_journal_path(),
            args.aet,
            args.bind or config.listen_bind or DEFAULT_LISTEN_BIND,
            port,
            timeouts=args.timeouts,
            tls=tls,
            reporters=args.reporter,
            max_pdu=args.max_pdu,
        )
        audit_config = replace(config.audit, syslog=args.audit or config.audit.syslog)
        audit = attach_audit(audit_config.checked(), agent.events, agent.aet)
        agent.start()
        try:
            web = start_http(serve_agent, agent, http)
        except OSError:
            agent.stop()
            raise
    except (ConfigError, OSError) as exc:  # e.g. StorageUnavailable: the journal's path
        return fail(args, f"cannot start the agent: {exc}")
    stop.wait()
    log.info("shutting down")
    if web is not None:
        web.stop()
    agent.stop()
    audit.close()
    return 0
