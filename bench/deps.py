"""What the benchmark needs besides stgcmt: matplotlib (pip, into this interpreter), DCMTK and
Orthanc (Debian packages, installed with apt-get when we are root). Anything still missing
ends the run with a message naming the package, before any measurement starts."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys

from .procs import BenchError

INSTALL_TIMEOUT = 900.0


def ensure_matplotlib() -> None:
    if importlib.util.find_spec("matplotlib") is not None:
        return
    print("bench: installing matplotlib with pip into", sys.executable, file=sys.stderr)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "matplotlib"],
        timeout=INSTALL_TIMEOUT,
        check=False,
    )
    importlib.invalidate_caches()
    if done.returncode != 0 or importlib.util.find_spec("matplotlib") is None:
        raise BenchError(f"matplotlib missing: run {sys.executable} -m pip install matplotlib")


def _find(command: str, extra_dirs: tuple[str, ...]) -> str | None:
    """PATH first, then sbin directories a non-root PATH may lack (Orthanc is /usr/sbin)."""
    found = shutil.which(command)
    if found:
        return found
    for directory in extra_dirs:
        candidate = os.path.join(directory, command)
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def _apt_install(package: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
    ):
        subprocess.run(argv, env=env, timeout=INSTALL_TIMEOUT, check=False)


DCMTK_BIN = "/usr/bin"
"""Where Debian's dcmtk puts storescu and storescp. Not PATH: in the venv, ``storescu`` is
pynetdicom's console script of the same name."""


def _is_dcmtk(path: str) -> bool:
    """DCMTK's tools say so in ``--version`` ("$dcmtk: storescu v3.6.7 ...", OFFIS)."""
    try:
        done = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    text = (done.stdout + done.stderr).lower()
    return "dcmtk" in text or "offis" in text


def ensure_dcmtk(command: str) -> str:
    """Absolute path of DCMTK's ``command`` (``/usr/bin/storescu``), installing the Debian
    package dcmtk if root can, checked to be DCMTK's and not a namesake."""
    path = os.path.join(DCMTK_BIN, command)
    if not os.access(path, os.X_OK) and os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"bench: installing Debian package dcmtk for {command}", file=sys.stderr)
        _apt_install("dcmtk")
    if not os.access(path, os.X_OK):
        raise BenchError(
            f"{path} not found: install the Debian package 'dcmtk'"
            " (as root: apt-get install dcmtk), or run python -m bench as root"
        )
    if not _is_dcmtk(path):
        raise BenchError(f"{path} is not DCMTK's {command} ({path} --version names no DCMTK)")
    return path


def ensure_command(command: str, package: str) -> str:
    """Path of a program from a Debian package, installing the package if root can."""
    sbin = ("/usr/sbin", "/sbin", "/usr/local/sbin")
    found = _find(command, sbin)
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"bench: installing Debian package {package} for {command}", file=sys.stderr)
        _apt_install(package)
        found = _find(command, sbin)
        if found:
            return found
    raise BenchError(
        f"{command} not found: install the Debian package '{package}'"
        f" (as root: apt-get install {package}), or run python -m bench as root"
    )
