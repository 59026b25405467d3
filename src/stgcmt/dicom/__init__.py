"""Pure DICOM: UIDs, statuses, data set encoding. No I/O, no networking."""
