#!/usr/bin/env bash
# The tests on a live dqlite cluster (tests/test_dqlite.py): installs Debian's
# go-dqlite and a Python 3.13 venv with dqlite-dbapi (.ci/dqlite.sh install),
# starts a 3-node cluster on 127.0.0.1, runs the tests with the venv's Python,
# and always stops the cluster.  Fails if the install or the start fails, if
# any test failed, or if any was skipped (a skip means no client or no cluster).
# Prints unittest's own summary for .ci/run to count.
set -uo pipefail
cd "$(dirname "$0")/.."
say() { echo "dqlite-tests.sh: $*" >&2; }

python=$(bash .ci/dqlite.sh install) || { say "FAILED: could not install go-dqlite or dqlite-dbapi"; exit 1; }
trap 'bash .ci/dqlite.sh stop >/dev/null 2>&1' EXIT
if ! bash .ci/dqlite.sh start >/dev/null; then
  say "FAILED: the dqlite cluster did not come up (see the node logs above)"; exit 1
fi
bash .ci/dqlite.sh status >&2 || { say "FAILED: the dqlite cluster is not healthy after start"; exit 1; }

log=$(mktemp)
"$python" -m unittest tests.test_dqlite -v 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
if grep -q 'skipped=' "$log"; then
  say "FAILED: some dqlite tests were skipped"; rc=1
fi
rm -f "$log"
exit "$rc"
