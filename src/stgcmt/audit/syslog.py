"""RFC 5424 syslog messages carrying an audit message, as IHE ATNA (ITI-20) specifies them,
and the RFC 5425 octet-counting frame for TLS. Pure functions, no I/O."""

from __future__ import annotations

import datetime
from typing import Literal

AUTH_FACILITY = 10
"""Security/authorization messages (RFC 5424 facility 10), as ITI-20 requires."""
Severity = Literal[4, 5]
NOTICE: Severity = 5
"""Normal but significant: what ITI-20 asks for most audit messages."""
WARNING: Severity = 4
"""For failures and security alerts (ITI-20 allows it where appropriate)."""
MSGID = "IHE+RFC-3881"
"""The MSGID ITI-20 assigns to audit messages in the RFC 3881 / DICOM schema."""
APP_NAME = "stgcmt"
BOM = b"\xef\xbb\xbf"
"""RFC 5424 6.4: a MSG in UTF-8 starts with the byte order mark."""
MAX_HEADER_FIELD = {"hostname": 255, "procid": 128}


def _header_field(value: str, limit: int) -> str:
    """RFC 5424 header fields are printable US-ASCII without spaces, or ``-`` when empty."""
    printable = "".join(c for c in value if 33 <= ord(c) <= 126)[:limit]
    return printable or "-"


def syslog_message(
    xml: bytes, *, hostname: str, procid: str, at: float, severity: Severity = NOTICE
) -> bytes:
    """``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - BOM XML`` (no structured data)."""
    stamp = datetime.datetime.fromtimestamp(at, datetime.UTC)
    header = " ".join(
        (
            f"<{AUTH_FACILITY * 8 + severity}>1",
            stamp.isoformat(timespec="microseconds").replace("+00:00", "Z"),
            _header_field(hostname, MAX_HEADER_FIELD["hostname"]),
            APP_NAME,
            _header_field(procid, MAX_HEADER_FIELD["procid"]),
            MSGID,
            "-",
        )
    )
    return header.encode("ascii") + b" " + BOM + xml


def octet_counted(message: bytes) -> bytes:
    """RFC 5425 4.3: ``MSG-LEN SP SYSLOG-MSG``, the framing over TLS."""
    return str(len(message)).encode("ascii") + b" " + message
