"""Storage: interfaces (``interfaces``), the instance store (``instances``) over an index
(``sqlite_index``) and a blob store (``files``), the SCP and SCU journals, read-only queries,
the SQLite plumbing (``sqlite``) and fsync helpers (``fsync``). Imports pure DICOM code only,
never networking or the services."""
