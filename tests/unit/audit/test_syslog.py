"""RFC 5424 messages as ITI-20 wants them, and RFC 5425 octet counting."""

from __future__ import annotations

from stgcmt.audit.syslog import WARNING, octet_counted, syslog_message

from support.rsyslog import HEADER

XML = b'<?xml version="1.0" encoding="UTF-8"?><AuditMessage/>'


def test_header_fields() -> None:
    message = syslog_message(XML, hostname="pacs1", procid="4242", at=1_800_000_000.5)
    assert message == (
        b"<85>1 2027-01-15T08:00:00.500000Z pacs1 stgcmt 4242 IHE+RFC-3881 - \xef\xbb\xbf" + XML
    )


def test_warning_severity_and_unprintable_header_values() -> None:
    message = syslog_message(XML, hostname="my host\n", procid="", at=0, severity=WARNING)
    match = HEADER.fullmatch(message)
    assert match is not None
    assert (match["pri"], match["hostname"], match["procid"]) == (b"84", b"myhost", b"-")


def test_octet_counting_frames_exactly_the_message() -> None:
    message = syslog_message("é".encode() + XML, hostname="h", procid="1", at=0)
    framed = octet_counted(message)
    length, _, rest = framed.partition(b" ")
    assert int(length) == len(rest) and rest == message
