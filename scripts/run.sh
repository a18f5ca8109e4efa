#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh) and runs the main job: the live server, playing through the
# sound card (on a machine with none, it starts a JACK dummy server and says so).
# Extra arguments go to `sound-generator serve`, e.g.  scripts/run.sh --http-port 8000
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TF_CPP_MIN_LOG_LEVEL=2
exec .venv/bin/sound-generator serve "$@"
