"""``--http HOST:PORT`` for ``stgcmt scp`` and ``stgcmt agent``: the flag, and starting the
HTTP server beside the service (credentials and HTTPS come from the TOML's ``[http]``)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

from stgcmt.config.http import HttpConfig
from stgcmt.http import HttpServer

S = TypeVar("S")


def add_http_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="serve the JSON API, dashboard and /metrics there (e.g. 127.0.0.1:8080); a"
        " non-loopback address needs [http] token (or username/password) in --config",
    )


def http_config(config: HttpConfig, args: argparse.Namespace) -> HttpConfig:
    """The file's ``[http]`` with ``--http`` over its ``listen``, checked."""
    if args.http is not None:
        config = replace(config, listen=args.http)
    return config.checked("--http/[http]")


def start_http(
    serve: Callable[[S, HttpConfig], HttpServer], service: S, config: HttpConfig
) -> HttpServer | None:
    """Start the HTTP server for a started service, if one is configured."""
    if not config.enabled:
        return None
    return serve(service, config).start()
