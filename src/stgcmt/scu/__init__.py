"""The Storage Commitment SCU: send files, request commitment, act only on reports from the
archive that was asked."""
