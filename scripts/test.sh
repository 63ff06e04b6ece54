#!/usr/bin/env bash
# Set up everything from nothing and run the whole test suite.
#   bash scripts/test.sh            # all tests
#   bash scripts/test.sh -k export  # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
exec .venv/bin/python -m pytest -ra "$@"
