#!/usr/bin/env bash
# Set up everything from nothing and run the whole story on real photos:
#   bash scripts/demo.sh                       # tuxpaint photos -> tlx-demo/run/report.html
#   bash scripts/demo.sh --dataset lfw-subset  # extra arguments go to `tlx demo`
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
exec .venv/bin/tlx demo "$@"
