#!/usr/bin/env bash
# The version matrix: for each Ultralytics release given (default: the floor, one 8.4 release before 8.4.93 and the
# newest), a fresh virtual environment with that release and this checkout, then the smoke (scripts/smoke.py) and,
# unless SMOKE_ONLY=1, the fast tests that exercise the Ultralytics contract. One summary line per release at the end.
#   scripts/version_matrix.sh                    # 8.3.253 8.4.50 newest
#   scripts/version_matrix.sh 8.3.253            # the floor only (what .ci/run calls with SMOKE_ONLY=1)
# Environments live under $MATRIX_DIR (default: a temporary folder, removed at exit unless KEEP=1).
set -uo pipefail
cd "$(dirname "$0")/.."
VERSIONS=("$@")
[ ${#VERSIONS[@]} -eq 0 ] && VERSIONS=(8.3.253 8.4.50 newest)
MATRIX_DIR="${MATRIX_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/yolo-attn-matrix.XXXXXX")}"
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$MATRIX_DIR"' EXIT
FAST_TESTS="${FAST_TESTS:-tests/test_failsafe.py tests/test_registration.py tests/test_reference.py tests/test_transfer.py tests/test_data_concurrency.py}"
export YOLO_OFFLINE=1 YOLO_AUTOINSTALL=0 OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
export YOLO_CONFIG_DIR="$MATRIX_DIR/config"  # never the user's settings (releases before 8.4.115 reset them)
mkdir -p "$YOLO_CONFIG_DIR"
summary=()
for v in "${VERSIONS[@]}"; do
  venv="$MATRIX_DIR/ultralytics-$v"
  spec="ultralytics==$v"; [ "$v" = newest ] && spec="ultralytics"
  echo "=== $spec: environment $venv"
  rm -rf "$venv"; python3 -m venv "$venv" && "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
  extra=(); [[ "$v" == 8.3.* ]] && extra=(scipy)  # 8.3 imports scipy without declaring it
  if ! "$venv/bin/python" -m pip install -q "$spec" "${extra[@]}" -e ".[dev]" >"$venv.pip.log" 2>&1; then
    summary+=("$v: INSTALL FAILED (see $venv.pip.log)"); tail -5 "$venv.pip.log"; continue
  fi
  installed="$("$venv/bin/python" -c 'import ultralytics; print(ultralytics.__version__)')"
  "$venv/bin/python" scripts/smoke.py; smoke=$?
  tests="skipped"
  if [ "${SMOKE_ONLY:-0}" != 1 ]; then
    # shellcheck disable=SC2086
    "$venv/bin/python" -m pytest -q -x -p no:cacheprovider $FAST_TESTS 2>&1 | tail -15
    tests="$([ "${PIPESTATUS[0]}" = 0 ] && echo passed || echo FAILED)"
  fi
  summary+=("$installed: smoke $([ $smoke = 0 ] && echo passed || echo FAILED), fast tests $tests")
done
echo "=== matrix"
printf '%s\n' "${summary[@]}"
! printf '%s\n' "${summary[@]}" | grep -q FAIL
