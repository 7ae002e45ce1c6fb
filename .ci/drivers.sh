#!/usr/bin/env bash
# The tests with real third-party SQLite drivers (tests/test_drivers.py):
# sqlcipher3-binary and pysqlite3-binary from PyPI in a venv of the default
# python3.  Fails if any test failed or was skipped (a skip means a driver
# did not install).  Prints unittest's own summary for .ci/run to count.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${SQLMIGRATE_DRIVERS_VENV:-$HOME/.cache/sqlmigrate-drivers/venv}
python=$(command -v python3 || command -v python)
if [ ! -x "$VENV/bin/python" ]; then
  "$python" -m venv "$VENV" || { echo "drivers.sh: cannot create $VENV" >&2; exit 1; }
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check sqlcipher3-binary pysqlite3-binary \
  || { echo "drivers.sh: pip install failed" >&2; exit 1; }
log=$(mktemp)
"$VENV/bin/python" -m unittest tests.test_drivers -v 2>&1 | grep -v ' ERROR CORE ' | tee "$log"
rc=${PIPESTATUS[0]}
if grep -q 'skipped=' "$log"; then
  echo "drivers.sh: some driver tests were skipped" >&2; rc=1
fi
rm -f "$log"
exit "$rc"
