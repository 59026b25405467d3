#!/usr/bin/env bash
# Install everything the test suite needs, then run it. Extra arguments go to pytest.
#   ./test.sh                 # the whole suite
#   ./test.sh -k orthanc -x   # a part of it
set -euo pipefail
cd "$(dirname "$0")"

# Real peers and services from Debian, one line each (a feature's tests name what they need):
DEBIAN_PACKAGES="
dcmtk orthanc
fuse3 libfuse3-dev pkg-config
rsyslog rsyslog-gnutls
systemd
postgresql-15
chromium
strace
"
# DCMTK and Orthanc are the interoperability peers; FUSE 3 is for the power-cut harness and the
# EIO file system (pyfuse3 builds against libfuse3); rsyslog (+ its GnuTLS driver) is the
# ATNA audit collector the audit tests start; PostgreSQL 15 is the second storage backend (each
# test session runs a private cluster from initdb); systemd's systemd-analyze verify and
# systemd-sysusers check deploy/; strace shows which sync calls the running SCP makes
# (tests/e2e/test_commitment_barrier.py). CI runs as root on a bare machine.
missing=""
for package in $DEBIAN_PACKAGES; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
    || missing="$missing $package"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  else
    echo "test.sh: install Debian's packages first (sudo apt-get install$missing)" >&2
    exit 1
  fi
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'

run_pytest() {
  set +e
  .venv/bin/python -m pytest "$@"
  local status=$?
  set -e
  if [ "$status" -eq 5 ]; then
    echo "test.sh: pytest collected no tests: that is a failure" >&2
    exit 1
  fi
  [ "$status" -eq 0 ] || exit "$status"
}

if [ "$#" -gt 0 ]; then
  run_pytest "$@"
  exit 0
fi
# Static checks first: lint, types (strict for the pure DICOM package), then the suite (which
# also checks the import rules between layers, tests/unit/test_layers.py).
.venv/bin/ruff check src tests tools bench
.venv/bin/python -m mypy
run_pytest
