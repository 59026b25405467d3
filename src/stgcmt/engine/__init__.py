"""stgcmt's own DICOM upper layer (PS3.8) and DIMSE (PS3.7) on asyncio, for exactly what the
services use; :mod:`.api` presents it through the same seam as ``stgcmt.net``."""
