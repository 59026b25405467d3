"""A server's connections: associations that count, and connections still silent, with the
oldest of those dropped past the limit (README "Security and limits")."""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar


class Pending(Protocol):
    """A connection that has not sent its A-ASSOCIATE-RQ yet (or not finished TLS)."""

    def drop(self, why: str) -> None: ...


A = TypeVar("A", bound=Pending)


class Registry(Generic[A]):
    """Only associations whose A-ASSOCIATE-RQ has arrived are ``active`` (they count toward
    the association limit); connections still silent are ``pending``, oldest first, and past
    ``max_pending`` the oldest is dropped, so a flood of idle sockets delays nobody who really
    associates."""

    def __init__(self, max_pending: int = 64) -> None:
        self.max_pending = max(1, max_pending)
        self.pending: dict[Pending, None] = {}
        self.active: set[A] = set()

    def add_pending(self, connection: Pending) -> None:
        self.pending[connection] = None
        while len(self.pending) > self.max_pending:
            oldest = next(iter(self.pending))
            del self.pending[oldest]
            oldest.drop(f"{self.max_pending} connections are waiting to associate: oldest dropped")

    def activate(self, association: A) -> None:
        self.pending.pop(association, None)
        self.active.add(association)

    def discard(self, connection: Pending) -> None:
        self.pending.pop(connection, None)
        self.active.discard(connection)  # type: ignore[arg-type,unused-ignore]
