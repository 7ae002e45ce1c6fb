#!/usr/bin/env bash
# CPython x SQLite compatibility matrix (issue 6).  Called by .ci/run after the
# normal test suite:   bash .ci/matrix.sh
#
# Runs tests/matrix.py with the --ci preset: every Python on the system SQLite,
# every built SQLite on the oldest (3.6) and newest (3.13) Python, and the real
# host pairs (CentOS 7, Ubuntu 18.04, RHEL 8, Debian 11, Ubuntu 22.04, Debian 12,
# Ubuntu 24.04).  Missing SQLite libraries are built from the npm package
# sqlite3's deps/ tarballs into ~/.cache/sqlmigrate-matrix (about 7 minutes on a
# fresh machine, nothing when the cache is warm).  Exit status: non-zero when any
# pair fails, and when the libraries cannot be fetched or built (no network, no
# npm, no gcc): that is a failure, never a quiet pass.
#
# MATRIX_ARGS overrides the selection, e.g. MATRIX_ARGS="" for the full matrix.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2

echo "=== CPython x SQLite matrix ==="
for tool in npm gcc nm; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        if [ "$tool" = nm ]; then
            echo "matrix: note: nm not found; the missing-symbol report is skipped"
        elif [ -z "$(ls "${SQLMIGRATE_MATRIX_CACHE:-$HOME/.cache/sqlmigrate-matrix}"/*/libsqlite3.so.0 2>/dev/null)" ]; then
            echo "matrix: ERROR: $tool is not installed and the library cache is empty" >&2
            exit 2
        fi
    fi
done

PY=$(command -v python3 || command -v python) || { echo "matrix: ERROR: no python3" >&2; exit 2; }
mkdir -p build/matrix
# Four pairs at once on 2 cores: a pair's suite mostly waits (fsync, lock
# waits, child processes), about 30% of its wall time is CPU.
"$PY" tests/matrix.py ${MATRIX_ARGS---ci --jobs 4} \
    --markdown build/matrix/matrix.md --json build/matrix/matrix.json
status=$?
case $status in
    0) ;;  # matrix.py's last line is the summary; print nothing after it
    1) echo "matrix: FAILED: some pair failed (logs in build/matrix/logs/)" >&2 ;;
    *) echo "matrix: FAILED: could not set up the matrix (exit $status)" >&2 ;;
esac
exit $status
