"""stgcmt: DICOM Storage Commitment (PS3.4 Annex J, Push Model) done right."""

__version__ = "0.2.0"
