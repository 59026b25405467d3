"""Storage: interfaces (``interfaces``), the instance store (``instances``) over an index
(``sqlite_index``) and a blob store (``files``), the SCP and SCU journals, read-only queries,
the SQLite plumbing (``sqlite``) and fsync helpers (``fsync``). Imports pure DICOM code only,
never networking or the services."""

import sqlite3

STORAGE_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, OSError)
"""What a journal or index write may raise when storage fails (disk full, read-only, I/O
error): services catch these without knowing the backend."""
