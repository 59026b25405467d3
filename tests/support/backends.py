"""The SCP's storage backends for tests that must hold on both: SQLite files in a data dir, or
the private PostgreSQL cluster (support/postgres.py). A test asks for the ``scp_backend``
fixture (parametrised over both) and opens the parts the way the service does
(:func:`stgcmt.storage.backends.open_scp_storage`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from stgcmt.config import DatabaseConfig
from stgcmt.storage.backends import ScpStorage, open_scp_queries, open_scp_storage
from stgcmt.storage.instances import InstanceStore
from stgcmt.storage.interfaces import InstanceIndex, ScpJournal, ScpQueries
from stgcmt.ul import STORAGE_SOP_CLASSES

BACKENDS = ("sqlite", "postgresql")


@dataclass
class Backend:
    """One backend for one test: ``url`` None is SQLite in ``data_dir``. Everything opened
    through it is closed by :meth:`close` (the fixture calls it)."""

    name: str
    data_dir: Path
    url: str | None = None
    _opened: list[ScpStorage] = field(default_factory=list)

    def database(self, node: str = "node-a", lease: float = 120.0) -> DatabaseConfig:
        return DatabaseConfig(url=self.url, node=node, lease=lease)

    def storage(self, node: str = "node-a", lease: float = 120.0) -> ScpStorage:
        opened = open_scp_storage(self.database(node, lease), self.data_dir, 0)
        self._opened.append(opened)
        return opened

    def journal(self, node: str = "node-a", lease: float = 120.0) -> ScpJournal:
        return self.storage(node, lease).journal

    def index(self, node: str = "node-a") -> InstanceIndex:
        return self.storage(node).index

    def store(self, node: str = "node-a", **kwargs) -> InstanceStore:
        """An instance store over this backend's index (files in the data dir)."""
        kwargs.setdefault("supported_classes", STORAGE_SOP_CLASSES)
        return InstanceStore(self.data_dir, index=self.index(node), **kwargs)

    def queries(self) -> ScpQueries:
        return open_scp_queries(self.url, self.data_dir)

    def close(self) -> None:
        for opened in self._opened:
            opened.journal.close()
            opened.index.close()
