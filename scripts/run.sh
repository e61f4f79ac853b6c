#!/usr/bin/env bash
# Set up and run the whole pipeline on the bundled Home Depot data.
#   bash scripts/run.sh            # default profile
#   bash scripts/run.sh quick      # the small profile the tests use
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/relgrade pipeline --profile "${1:-default}"
