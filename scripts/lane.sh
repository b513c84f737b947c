#!/usr/bin/env bash
# One CI lane on another stack than the default .venv: a fresh virtual environment with the
# pinned versions of .ci/constraints-LANE.txt, then esmeta_core itself with --no-deps (as the
# chapters' install cell puts it on Colab), then a chosen subset of the tests.
#
#   bash scripts/lane.sh colab   # Colab's runtime: Python 3.13, jax 0.7.2, flax 0.11.2, ...
#   bash scripts/lane.sh min     # the floors that pyproject.toml declares, exactly
#
# PYTHON_<LANE> names the interpreter (default: pyenv's 3.13.0 for colab, 3.11 for min).
# The subset covers the estimator on 1-8 devices and 2 processes, the CLI end to end on two
# processes, training, checkpoints and one chapter through nbval: the parts that depend on
# the versions of JAX, Flax, optax and orbax.
set -euo pipefail
LANE="${1:?usage: bash scripts/lane.sh colab|min [pytest args]}"
shift
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONSTRAINTS="$ROOT/.ci/constraints-$LANE.txt"
[ -f "$CONSTRAINTS" ] || { echo "[esmeta] no lane '$LANE' ($CONSTRAINTS missing)" >&2; exit 2; }
case "$LANE" in
  colab) DEFAULT_PYTHON="$HOME/.pyenv/versions/3.13.0/bin/python" ;;
  min) DEFAULT_PYTHON="$HOME/.pyenv/versions/3.11.7/bin/python" ;;
esac
VAR="PYTHON_${LANE^^}"
PYTHON="${!VAR:-$DEFAULT_PYTHON}"
if ! [ -x "$PYTHON" ] && ! command -v "$PYTHON" >/dev/null; then
  echo "[esmeta] lane $LANE: no interpreter at $PYTHON (set $VAR)" >&2
  exit 2
fi
VENV="$ROOT/.venv-$LANE"
STAMP="$VENV/.esmeta-lane"
if [ ! -f "$STAMP" ] || [ "$CONSTRAINTS" -nt "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ]; then
  echo "[esmeta] lane $LANE: installing $CONSTRAINTS into $VENV" >&2
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip >&2
  # The runtime's own packages, pinned; then the test tools (not on Colab: unpinned).
  "$VENV/bin/python" -m pip install -q -c "$CONSTRAINTS" \
    jax jaxlib flax optax orbax-checkpoint numpy matplotlib pillow tqdm scikit-learn packaging >&2
  "$VENV/bin/python" -m pip install -q -c "$CONSTRAINTS" \
    pytest pytest-xdist hypothesis nbval ipykernel >&2
  touch "$STAMP"
fi
# The checkout itself, without dependencies, as the chapters install it (reinstalled each
# time: the code changes between runs, the pins do not).
"$VENV/bin/python" -m pip install -q --no-deps --force-reinstall "$ROOT" >&2
"$VENV/bin/python" -c "import jax, flax, optax, sys; print(f'[esmeta] lane $LANE: Python {sys.version.split()[0]}, jax {jax.__version__}, flax {flax.__version__}, optax {optax.__version__}')" >&2
cd "$ROOT"
export ESMETA_QUICK=1
# -p no:cacheprovider: the lane leaves no .pytest_cache behind; addopts from pyproject apply,
# --import-mode=importlib so that tests import the installed package, not the checkout.
exec "$VENV/bin/python" -m pytest -p no:cacheprovider --import-mode=importlib -n 2 --dist loadscope \
  "tests/test_es.py::test_estimate_aligns_with_true_gradient_of_quadratic" \
  "tests/test_es.py::test_raw_estimate_is_unbiased_for_gaussian_smoothed_gradient" \
  "tests/test_es.py::test_same_gradient_on_1_2_4_8_devices" \
  "tests/test_es.py::test_same_gradient_on_2_processes_with_2_devices_each" \
  "tests/test_multihost.py::test_two_processes_of_two_devices_end_with_the_parameters_of_one_process_of_four" \
  "tests/test_train.py::test_few_seeded_steps_lower_the_training_loss" \
  "tests/test_train.py::test_resumed_run_ends_with_the_same_parameters" \
  "tests/test_train.py::test_train_and_eval_commands_write_their_files" \
  notebooks/01_es_from_scratch.ipynb \
  "$@"
