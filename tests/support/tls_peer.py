"""A modality that takes Storage Commitment reports over TLS on a new association: what the
SCP's own outgoing TLS (trusting, verifying or refusing the listener's certificate) is tested
against. pynetdicom's server, so the far end is not our own code."""

from __future__ import annotations

import ssl

from pynetdicom import AE, evt
from pynetdicom.transport import ThreadedAssociationServer

from stgcmt.dicom.uids import STORAGE_COMMITMENT_PUSH_MODEL

from support.common import LOCALHOST
from support.pynetdicom_peer import Modality


def tls_report_listener(
    modality: Modality, server_context: ssl.SSLContext
) -> ThreadedAssociationServer:
    """Start a TLS listener on a free port of 127.0.0.1 (``server_address[1]``) that accepts
    the SCP role for Storage Commitment and records each N-EVENT-REPORT in ``modality``. The
    caller shuts it down."""
    ae = AE(modality.aet)
    ae.add_supported_context(STORAGE_COMMITMENT_PUSH_MODEL, scu_role=True, scp_role=True)
    server = ae.start_server(
        (LOCALHOST, 0),
        block=False,
        ssl_context=server_context,
        evt_handlers=[(evt.EVT_N_EVENT_REPORT, modality._on_report)],
    )
    assert server is not None  # what a non-blocking start returns
    return server
