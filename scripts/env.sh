# Sourced by the other scripts: creates or reuses ./.venv with esmeta_core[$ESMETA_EXTRAS]
# (default "dev"; .ci/run adds "tfds" so that CI runs the tensorflow-datasets test).
# Re-installs only when pyproject.toml or the extras changed since the last install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"
if [ ! -x "$VENV/bin/python" ]; then
  # requires-python in pyproject.toml: jax>=0.7.0 has no wheels for Python 3.10
  if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "[esmeta] error: esmeta needs Python 3.11 or newer; $PYTHON is" \
      "$("$PYTHON" -V 2>/dev/null || echo 'not found'): run again with PYTHON=/path/to/python3.11 (or newer)" >&2
    return 1 2>/dev/null || exit 1
  fi
  echo "[esmeta] creating $VENV" >&2
  "$PYTHON" -m venv "$VENV"
fi
EXTRAS="${ESMETA_EXTRAS:-dev}"
STAMP="$VENV/.esmeta-installed"  # the extras installed, e.g. "dev,tfds" (empty: "dev")
INSTALLED="$(cat "$STAMP" 2>/dev/null || true)"
INSTALLED=",${INSTALLED:-dev},"
MISSING=""
for extra in ${EXTRAS//,/ }; do
  case "$INSTALLED" in *",$extra,"*) ;; *) MISSING="$MISSING $extra" ;; esac
done
if [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ] || [ -n "$MISSING" ]; then
  echo "[esmeta] installing esmeta_core[$EXTRAS] into $VENV (a few minutes the first time)" >&2
  "$VENV/bin/python" -m pip install -q --upgrade pip >&2
  "$VENV/bin/python" -m pip install -q -e "$ROOT[$EXTRAS]" >&2
  echo "$EXTRAS" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
