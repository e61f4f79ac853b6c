#!/usr/bin/env bash
# Create .venv with relgrade and its pinned dependencies (idempotent).
# torch is pinned to 2.13.0: pip takes the CPU wheel; a looser pin pulls CUDA wheels.
#   bash scripts/setup.sh              # relgrade and the test tools
#   RELGRADE_EXTRAS=test,spark bash scripts/setup.sh   # + Feast's Spark offline store (pyspark; Java 17)
#   RELGRADE_EXTRAS=test,spark,distributed bash scripts/setup.sh   # + Ray (engine: ray); what the tests install
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.relgrade-installed
extras=${RELGRADE_EXTRAS:-test}
hash=$(sha256sum pyproject.toml | cut -c1-16)
# the stamp: "<pyproject digest> <extras installed>"; satisfied when the digest matches and
# it holds every wanted extra (a later plain setup does not reinstall without the others)
have=$(cat "$stamp" 2>/dev/null || true)
ok=0
if [ "${have%% *}" = "$hash" ]; then
  ok=1
  for e in ${extras//,/ }; do
    case ",${have#* }," in *",$e,"*) ;; *) ok=0 ;; esac
  done
fi
if [ "$ok" != 1 ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[$extras]"
  echo "$hash $extras" > "$stamp"
fi
