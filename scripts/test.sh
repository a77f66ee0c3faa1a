#!/usr/bin/env bash
# The project's test command: builds in release mode, runs the Rust tests with
# cargo-nextest, then the two Python suites and a soak against the release
# server binary.
#
#   bash scripts/test.sh
#
# Phases: (a) Python virtual environments under target/py from requirements/,
# (b) the Node.js packages of tests/node from its package-lock.json (for the
# Node client that the grpc_stubs suite runs), (c) cargo build, (d) cargo
# nextest, (e) the ONNX backend node tests (written by
# scripts/gen_onnx_node_tests.py, run by examples/conformance.rs), (e2) one
# short run of examples/model_bench.rs per model format, (f) pytest, one
# process and one environment per suite: both suites
# load protobuf modules with the same file names (one generated from proto/,
# one from the official wheels), which cannot share an interpreter, (g) a
# 60-second soak of the release server (scripts/soak.sh).
#
# Environment: PYTHON selects the interpreter the virtual environments are
# made with (default: python3). Needs node and npm on PATH.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
# Installed without its dependencies: they would pull in the full `tensorflow`
# package next to tensorflow-cpu (see requirements/test-tf.txt).
TF_SERVING_API="tensorflow-serving-api==2.21.0"
PYTEST_TIMEOUT_S=120
RESULTS_DIR=target/python-tests

# Python bytecode of the suites goes under target/, not next to the sources.
export PYTHONPYCACHEPREFIX="$PWD/target/pycache"
export TF_CPP_MIN_LOG_LEVEL=2

TIMINGS=()
PHASE=""
PHASE_START=0

begin_phase() {
    PHASE=$1
    PHASE_START=$SECONDS
    printf '\n==> %s\n' "$PHASE"
}

end_phase() {
    local took=$((SECONDS - PHASE_START))
    TIMINGS+=("$PHASE: ${took}s")
    printf '<== %s took %ss\n' "$PHASE" "$took"
    PHASE=""
}

print_timings() {
    if [[ -n $PHASE ]]; then
        TIMINGS+=("$PHASE: $((SECONDS - PHASE_START))s (did not finish)")
    fi
    printf '\nphase timings:\n'
    printf '  %s\n' "${TIMINGS[@]}"
}
trap print_timings EXIT

# ensure_venv NAME REQUIREMENTS [NO_DEPS_SPEC]
# Creates target/py/NAME if needed and installs REQUIREMENTS (and NO_DEPS_SPEC
# with --no-deps) into it, unless the stamp file shows that exactly these
# requirements were installed already.
ensure_venv() {
    local name=$1 requirements=$2 no_deps=${3:-}
    local dir=target/py/$name
    local stamp=$dir/.requirements.sha256
    local want
    want=$({ cat "$requirements"; printf '%s\n' "$no_deps"; } | sha256sum | cut -d' ' -f1)

    if [[ -x $dir/bin/python ]] && "$dir/bin/python" -c '' 2>/dev/null; then
        if [[ -f $stamp && $(<"$stamp") == "$want" ]]; then
            echo "$dir: up to date with $requirements"
            return 0
        fi
    else
        echo "$dir: creating with $("$PYTHON" --version 2>&1)"
        rm -rf "$dir"
        "$PYTHON" -m venv "$dir"
    fi
    echo "$dir: installing $requirements${no_deps:+ and $no_deps (--no-deps)}"
    rm -f "$stamp"
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check \
        --requirement "$requirements"
    if [[ -n $no_deps ]]; then
        "$dir/bin/python" -m pip install --quiet --disable-pip-version-check \
            --no-deps "$no_deps"
    fi
    echo "$want" >"$stamp"
}

# ensure_node_modules DIR
# Installs DIR/node_modules exactly as DIR/package-lock.json says, unless the
# stamp file shows that this lock file was installed already. `npm ci` starts
# by deleting node_modules, stamp included, so a failed install is redone on
# the next run. --ignore-scripts: no package needs an install script (the only
# one, protobufjs's, just prints advice), and none should run here.
ensure_node_modules() {
    local dir=$1
    local stamp=$dir/node_modules/.package-lock.sha256
    local want
    want=$(sha256sum <"$dir/package-lock.json" | cut -d' ' -f1)

    if [[ -f $stamp && $(<"$stamp") == "$want" ]]; then
        echo "$dir/node_modules: up to date with $dir/package-lock.json"
        return 0
    fi
    echo "$dir/node_modules: installing $dir/package-lock.json with node $(node --version), npm $(npm --version)"
    npm ci --prefix "$dir" --no-audit --no-fund --ignore-scripts
    echo "$want" >"$stamp"
}

# ensure_node_tests DIR
# Writes the ONNX backend node tests of the pinned onnx package into DIR,
# unless DIR's stamp shows they were written by that version with this
# version of the writing script already.
ensure_node_tests() {
    local dir=$1
    local want
    want="onnx==$(sed -n 's/^onnx==//p' requirements/test-grpc.txt) $(sha256sum <scripts/gen_onnx_node_tests.py | cut -c1-16)"
    if [[ -f $dir/.stamp && $(<"$dir/.stamp") == "$want" ]]; then
        echo "$dir: node tests already written ($want)"
        return 0
    fi
    target/py/grpc/bin/python scripts/gen_onnx_node_tests.py "$dir"
    echo "$want" >"$dir/.stamp"
}

# run_pytest NAME VENV SUITE_DIR: sets PYTEST_STATUS[NAME].
declare -A PYTEST_STATUS=()
run_pytest() {
    local name=$1 venv=$2 suite=$3
    local status=0
    rm -f "$RESULTS_DIR/$name.xml"
    "target/py/$venv/bin/python" -m pytest -q \
        --timeout="$PYTEST_TIMEOUT_S" \
        --junitxml="$RESULTS_DIR/$name.xml" \
        "$suite" || status=$?
    if [[ $status -eq 5 ]]; then
        echo "pytest $suite: no tests were collected" >&2
    fi
    PYTEST_STATUS[$name]=$status
}

# Prints "python: N passed, M failed[, K skipped]" from the JUnit reports.
# A suite that exited non-zero without reporting a failure (collection
# aborted, no tests, crash) counts as one failure, so the line never shows
# "0 failed" for a failed run.
python_summary() {
    "$PYTHON" - "$RESULTS_DIR" "grpc_stubs=${PYTEST_STATUS[grpc_stubs]}" \
        "official=${PYTEST_STATUS[official]}" <<'EOF'
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

results = Path(sys.argv[1])
passed = failed = skipped = 0
for arg in sys.argv[2:]:
    name, status = arg.split("=")
    suite_failed = 0
    report = results / f"{name}.xml"
    if report.is_file():
        for suite in ET.parse(report).getroot().iter("testsuite"):
            tests, errors, failures, skips = (
                int(suite.get(key, 0)) for key in ("tests", "errors", "failures", "skipped")
            )
            passed += tests - errors - failures - skips
            suite_failed += errors + failures
            skipped += skips
    if int(status) != 0 and suite_failed == 0:
        suite_failed = 1
    failed += suite_failed
line = f"python: {passed} passed, {failed} failed"
if skipped:
    line += f", {skipped} skipped"
print(line)
EOF
}

begin_phase "python environments"
ensure_venv grpc requirements/test-grpc.txt
ensure_venv tf requirements/test-tf.txt "$TF_SERVING_API"
end_phase

begin_phase "node packages"
ensure_node_modules tests/node
end_phase

begin_phase "cargo build"
cargo build --release --locked --bins --examples
end_phase

FAILED=()

begin_phase "cargo nextest"
cargo nextest run --release --locked || FAILED+=("cargo nextest")
end_phase

begin_phase "onnx conformance"
ensure_node_tests target/onnx-node-tests
CONFORMANCE_LOG=target/conformance.log
target/release/examples/conformance target/onnx-node-tests | tee "$CONFORMANCE_LOG" \
    || FAILED+=("onnx conformance")
end_phase

begin_phase "model_bench runs"
# Benchmarks are not run here (scripts/bench.sh does); this only checks that
# the benchmark runs on both model formats and prints its figures.
for model in examples/models/mnist/1/model.onnx examples/models/mnist_savedmodel/1; do
    line=$(target/release/examples/model_bench --model "$model" --batch 4 --threads 2 --seconds 0.2) \
        && grep -qE '^images_per_sec=[0-9.]+ gflops=[0-9.]+ ' <<<"$line" \
        && echo "$model: $line" \
        || FAILED+=("model_bench on $model")
done
end_phase

begin_phase "python suites"
mkdir -p "$RESULTS_DIR"
run_pytest grpc_stubs grpc tests/python/grpc_stubs
run_pytest official tf tests/python/official
for name in grpc_stubs official; do
    if [[ ${PYTEST_STATUS[$name]} -ne 0 ]]; then
        FAILED+=("pytest $name (exit ${PYTEST_STATUS[$name]})")
    fi
done
end_phase

begin_phase "soak (60 s)"
SOAK_LOG=target/soak.log
bash scripts/soak.sh 60 2>&1 | tee "$SOAK_LOG" || FAILED+=("soak")
end_phase

trap - EXIT
print_timings
echo
if [[ ${#FAILED[@]} -ne 0 ]]; then
    printf 'FAILED: %s\n' "${FAILED[@]}"
fi
grep '^conformance: [0-9]' "$CONFORMANCE_LOG" || echo "conformance: did not run"
python_summary
SOAK_FIGURES=$(sed -n -E 's/^soak_(requests|failed_requests|requests_per_sec|rss_growth_pct)=/\1=/p' "$SOAK_LOG" | paste -sd' ')
echo "soak: ${SOAK_FIGURES:-did not finish}"
[[ ${#FAILED[@]} -eq 0 ]]
