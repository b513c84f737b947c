#!/usr/bin/env bash
# The whole test suite: ruff, unit and integration tests, notebooks (nbval, quick
# mode), jupytext pair sync and the book build. Usage: bash scripts/test.sh [pytest args]
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
export ESMETA_QUICK=1
echo "[esmeta] ruff check" >&2
ruff check . && ruff format --check .
# Two workers (ESMETA_TEST_WORKERS): --dist loadscope keeps a notebook's cells, and each
# test module, on one worker, in order. ESMETA_TEST_WORKERS=0 runs everything in one process.
WORKERS="${ESMETA_TEST_WORKERS:-2}"
echo "[esmeta] pytest ($WORKERS workers)" >&2
if [ "$WORKERS" = "0" ]; then
  python -m pytest "$@"
else
  python -m pytest -n "$WORKERS" --dist loadscope "$@"
fi
