#!/usr/bin/env bash
# Builds the book with a local MathJax, so that its maths renders offline.
#   bash scripts/build_book.sh                 # MathJax (once), then jupyter-book build
#   bash scripts/build_book.sh -W -n --path-output DIR   # extra arguments: jupyter-book's
#   bash scripts/build_book.sh --mathjax-only  # only fetch MathJax into book/_mathjax/
# This is the one build command: the README's, scripts/check_book.py's and the tests'.
# A bare `jupyter-book build` leaves every formula as raw TeX: book/_config.yml points
# MathJax at the local copy, which only this script installs.
# MathJax 3 comes from the npm registry (`npm install mathjax@3`) into book/_mathjax/
# (ignored by git, never committed); book/_config.yml serves it as _static/mathjax/.
# To publish with the CDN instead, set sphinx.config.mathjax_path in book/_config.yml
# to https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-chtml.js and drop html_static_path.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MJ="$ROOT/book/_mathjax"
if [ ! -f "$MJ/static/mathjax/tex-chtml.js" ]; then
  echo "[esmeta] installing MathJax 3 from npm into $MJ" >&2
  mkdir -p "$MJ"
  npm install --silent --no-audit --no-fund --prefix "$MJ" mathjax@3 >&2
  rm -rf "$MJ/static" && mkdir -p "$MJ/static"
  cp -r "$MJ/node_modules/mathjax/es5" "$MJ/static/mathjax"
fi
if [ "${1:-}" = "--mathjax-only" ]; then
  exit 0
fi
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
JUPYTER_BOOK="$(dirname "$PYTHON")/jupyter-book"
if [ ! -x "$JUPYTER_BOOK" ]; then  # no .venv here: the jupyter-book on PATH
  JUPYTER_BOOK="$(command -v jupyter-book)"
fi
cd "$ROOT"
"$JUPYTER_BOOK" build . --config book/_config.yml --toc book/_toc.yml "$@"
