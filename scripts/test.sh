#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh) and runs the whole test suite, slow and JACK tests included.
# Extra arguments go to pytest, e.g.  scripts/test.sh -m "not slow"
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TF_CPP_MIN_LOG_LEVEL=2
exec .venv/bin/python -m pytest "$@"
