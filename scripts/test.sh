#!/usr/bin/env bash
# The whole test suite: ruff, unit and integration tests, notebooks (nbval, quick
# mode), jupytext pair sync and the book build. Usage: bash scripts/test.sh [pytest args]
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
export ESMETA_QUICK=1
echo "[esmeta] ruff check" >&2
ruff check . && ruff format --check .
echo "[esmeta] pytest" >&2
python -m pytest "$@"
