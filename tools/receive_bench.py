"""Measure the C-STORE receive path against DCMTK's storescp, side by side in one run.

    .venv/bin/python tools/receive_bench.py --runs 6            # 500 x 5 KB, ratio vs storescp
    .venv/bin/python tools/receive_bench.py --large-mb 512      # peak RSS of one 512 MB C-STORE
    .venv/bin/python tools/receive_bench.py --src /tmp/base/src # another checkout's code

Every figure is a ratio inside one run (the machine is shared): runs alternate between
``/usr/bin/storescp`` and ``stgcmt scp``, each run into a fresh directory, one storescu
association (``TCP_NODELAY=1``) sending every file. Processes are ours, on 127.0.0.1, stopped
by PID. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

STORESCU = "/usr/bin/storescu"
STORESCP = "/usr/bin/storescp"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
LOCALHOST = "127.0.0.1"
CHUNK = 1 << 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOCALHOST, 0))
        return int(s.getsockname()[1])


def _dataset(pixels: bytes | None) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "RECV-BENCH"
    ds.Modality = "OT"
    if pixels is not None:
        ds.add_new(0x7FE00010, "OB", pixels)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def small_files(folder: Path, count: int, size: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in range(count):
        path = folder / f"{n:05d}.dcm"
        _dataset(os.urandom(size)).save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def large_file(path: Path, megabytes: int) -> Path:
    """A Part 10 file whose Pixel Data (OB) is ``megabytes`` MB, written in 1 MB pieces."""
    _dataset(None).save_as(path, enforce_file_format=True)
    length = megabytes << 20
    with open(path, "ab") as f:
        f.write(struct.pack("<HH2s2xI", 0x7FE0, 0x0010, b"OB", length))
        block = os.urandom(CHUNK)
        for _ in range(megabytes):
            f.write(block)
    return path


def wait_port(port: int, proc: subprocess.Popen[bytes], deadline: float = 20.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection((LOCALHOST, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def start(kind: str, where: Path, port: int, src: str | None) -> subprocess.Popen[bytes]:
    where.mkdir(parents=True)
    if kind == "storescp":
        argv = [STORESCP, "--output-directory", str(where), "-aet", "STGCMT_SCP", str(port)]
        env = {**os.environ, "TCP_NODELAY": "1"}
    else:
        argv = [sys.executable, "-m", "stgcmt", "scp", "--bind", LOCALHOST, "--port", str(port)]
        argv += ["--data-dir", str(where), "--accept-unknown"]
        env = dict(os.environ)
        if src:
            env["PYTHONPATH"] = src
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def send(port: int, files: list[Path]) -> float:
    """Seconds storescu takes to send ``files`` on one association."""
    argv = [STORESCU, "-aec", "STGCMT_SCP", "-aet", "BENCH", LOCALHOST, str(port)]
    env = {**os.environ, "TCP_NODELAY": "1"}
    began = time.perf_counter()
    done = subprocess.run(
        [*argv, *map(str, files)], env=env, capture_output=True, timeout=600, check=False
    )
    took = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"storescu exited {done.returncode}: {done.stderr[-400:]!r}")
    return took


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process and all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmHWM:",)):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def ingest(work: Path, runs: int, count: int, size: int, src: str | None) -> dict[str, object]:
    files = small_files(work / "small", count, size)
    rates: dict[str, list[float]] = {"storescp": [], "stgcmt": []}
    cpu: dict[str, list[float]] = {"storescp": [], "stgcmt": []}
    for run in range(runs):
        for kind in ("storescp", "stgcmt") if run % 2 == 0 else ("stgcmt", "storescp"):
            port = free_port()
            proc = start(kind, work / f"{kind}-{run}", port, src)
            try:
                time.sleep(0.5)  # start-up work (imports) done
                began = cpu_seconds(proc.pid)
                rates[kind].append(count / send(port, files))
                cpu[kind].append((cpu_seconds(proc.pid) - began) / count * 1e6)
            finally:
                stop(proc)
    ratios = [
        ours / theirs for ours, theirs in zip(rates["stgcmt"], rates["storescp"], strict=True)
    ]
    return {
        "instances": count,
        "bytes": size,
        "stgcmt_per_s": [round(r) for r in rates["stgcmt"]],
        "storescp_per_s": [round(r) for r in rates["storescp"]],
        "server_cpu_us_per_instance_median": {
            kind: round(statistics.median(values)) for kind, values in cpu.items()
        },
        "ratio_min_median_max": [
            round(min(ratios), 2),
            round(statistics.median(ratios), 2),
            round(max(ratios), 2),
        ],
    }


def memory(work: Path, megabytes: int, src: str | None) -> dict[str, object]:
    path = large_file(work / "large.dcm", megabytes)
    port = free_port()
    proc = start("stgcmt", work / "stgcmt-large", port, src)
    try:
        before = peak_rss_mb(proc.pid)
        took = send(port, [path])
        after = peak_rss_mb(proc.pid)
    finally:
        stop(proc)
    return {
        "megabytes": megabytes,
        "seconds": round(took, 2),
        "peak_rss_before_mb": round(before, 1),
        "peak_rss_after_mb": round(after, 1),
        "peak_rss_growth_mb": round(after - before, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=0, help="interleaved runs of the ingest")
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--size", type=int, default=5000, help="bytes of pixel data each")
    parser.add_argument("--large-mb", type=int, default=0, help="one C-STORE of this size")
    parser.add_argument("--src", help="PYTHONPATH for stgcmt (another checkout's src)")
    args = parser.parse_args()
    result: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="receive-bench-") as tmp:
        if args.runs:
            result["ingest"] = ingest(Path(tmp), args.runs, args.count, args.size, args.src)
        if args.large_mb:
            result["memory"] = memory(Path(tmp), args.large_mb, args.src)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
