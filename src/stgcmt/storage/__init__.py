"""Storage: the instance index and files, the SCP and SCU journals, read-only queries and the
fsync helpers. Imports pure DICOM code only, never networking."""
