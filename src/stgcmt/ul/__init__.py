"""The networking seam: the one name services import to talk DICOM.

Services (SCP, SCU, agent) see plain Python objects: :class:`Handlers` for what arrives,
:class:`Association` for what they send, :class:`Server` for listening, :class:`Link` for the
association a request came on. Those three are Protocols (:mod:`.seam`); the engine behind
them is our own asyncio upper layer and DIMSE (:func:`listen`, :func:`open_association`), and
nothing engine-specific escapes.
"""

from __future__ import annotations

from typing import Any

from stgcmt.ul.client import open_association as _open_association
from stgcmt.ul.seam import (
    MAX_CONTEXTS,
    STORAGE_SOP_CLASSES,
    TRANSFER_SYNTAXES,
    ActionRequest,
    Association,
    AssociationError,
    CommitmentRole,
    ContextPlan,
    EventReport,
    Handlers,
    Link,
    PeerInfo,
    Rejection,
    Server,
    StoreRequest,
    StoreSink,
    Unreachable,
    is_success,
)
from stgcmt.ul.server import EngineServer


def listen(aet: str, bind: str, port: int, handlers: Handlers, **options: Any) -> Server:
    """A server (not yet started: ``start()`` it, or use it as a context manager) for ``aet``
    on ``bind``:``port``; ``options`` are :class:`~.server.EngineServer`'s."""
    return EngineServer(aet, bind, port, handlers, **options)


def open_association(*args: Any, **kwargs: Any) -> Association:
    """Request an association (see :func:`.client.open_association` for the arguments),
    raising :class:`AssociationError` with a sentence a user can act on."""
    return _open_association(*args, **kwargs)


__all__ = [
    "MAX_CONTEXTS",
    "STORAGE_SOP_CLASSES",
    "TRANSFER_SYNTAXES",
    "ActionRequest",
    "Association",
    "AssociationError",
    "CommitmentRole",
    "ContextPlan",
    "EventReport",
    "Handlers",
    "Link",
    "PeerInfo",
    "Rejection",
    "Server",
    "StoreRequest",
    "StoreSink",
    "Unreachable",
    "is_success",
    "listen",
    "open_association",
]
