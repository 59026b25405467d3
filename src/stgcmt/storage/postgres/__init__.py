"""The PostgreSQL backend: the instance index (:mod:`.index`), the SCP journal with its leased
report queue (:mod:`.journal`) and the read-only views (:mod:`.queries`) in one database shared
by every node of an archive; :mod:`.connection` (pool, errors, URL shown without password) and
:mod:`.schema` (versioned migrations). Imported only when a ``postgresql://`` URL is configured:
psycopg is an optional dependency (``pip install 'stgcmt[postgresql]'``)."""
