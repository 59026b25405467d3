"""Benchmark suite for stgcmt (issue 5): ingest, send, commitment latency and concurrency,
side by side with DCMTK and Orthanc on 127.0.0.1. Run it with ``python -m bench``."""
