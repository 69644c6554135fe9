#!/usr/bin/env bash
# Install what the tests need (./setup.sh --dev) and run them.
#
#   ./run-tests.sh [pytest arguments]      e.g. ./run-tests.sh -m "not slow"
#
# Test files run on NEWSREC_TEST_WORKERS processes (pytest-xdist, default 2; 0 runs them in
# this process): most of the suite's time is JVMs, archives and subprocesses starting, which
# overlap well on two cores.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
./setup.sh --dev
venv="${NEWSREC_VENV:-$here/.venv}"
export TF_ENABLE_ONEDNN_OPTS=0 TF_CPP_MIN_LOG_LEVEL=2 SPARK_LOCAL_IP=127.0.0.1
workers="${NEWSREC_TEST_WORKERS:-2}"
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider --durations=15 -n "$workers" \
    --dist loadfile "$@"
