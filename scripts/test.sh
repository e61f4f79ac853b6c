#!/usr/bin/env bash
# Set up and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
RELGRADE_EXTRAS=test,spark,distributed bash scripts/setup.sh
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
# the Spark offline store tests run a local Spark: Java 17 or later (tests/integration/test_spark_store.py)
jv=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1 || true)
if [ -z "$jv" ] || [ "$jv" -lt 17 ]; then
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq openjdk-17-jre-headless >/dev/null
fi
# the report tests render pages in headless Chromium (tests/browser.py)
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
# the fp32 path on every CPU: an AMX machine runs what a machine without AMX runs (relgrade/numerics.py)
export RELGRADE_PRECISION=${RELGRADE_PRECISION:-fp32}
exec .venv/bin/python -m pytest "$@"
