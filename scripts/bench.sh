#!/usr/bin/env bash
# Kernel speed against onnxruntime, in one run on this machine, written into
# BENCHMARKS.md (between its kernel-speed markers; the rest of the file is
# kept).
#
#   bash scripts/bench.sh                 # 3 s per configuration
#   SECONDS_PER_RUN=1 bash scripts/bench.sh
#
# For each model (mnist_cnn and cnn_medium, built by build_bench_models.py),
# thread count (1, 2) and batch (1, 8, 64) it runs onnxruntime's peer script
# (bench_ort.py) and then examples/model_bench.rs, one configuration at a
# time, so drift of a shared machine hits both alike. Both take the median of
# single runs after a warm-up and count FLOPs as 2 x the multiply-adds of
# Conv, Gemm and MatMul. Each configuration runs in a fresh process, whose
# peak RSS is reported too.
#
# The two peer tools come from the benchmark kit beside the project
# (BENCH_TOOLS, default ../shared/tools): build_bench_models.py and
# bench_ort.py. onnxruntime, onnx and numpy are installed at the versions
# pinned in requirements/test-grpc.txt into target/py/bench.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

BENCH_TOOLS=${BENCH_TOOLS:-../shared/tools}
SECS=${SECONDS_PER_RUN:-3}
PYTHON=${PYTHON:-python3}
MODELS_DIR=target/bench-models
OUT=BENCHMARKS.md
THREADS=(1 2)
BATCHES=(1 8 64)

for tool in build_bench_models.py bench_ort.py; do
    if [[ ! -f $BENCH_TOOLS/$tool ]]; then
        echo "bench.sh: $BENCH_TOOLS/$tool not found; set BENCH_TOOLS to the directory holding the peer tools" >&2
        exit 2
    fi
done

venv=target/py/bench
pins=$(grep -E '^(onnx|onnxruntime|numpy)==' requirements/test-grpc.txt | tr '\n' ' ')
if [[ ! -x $venv/bin/python || $(cat "$venv/.pins" 2>/dev/null) != "$pins" ]]; then
    rm -rf "$venv"
    "$PYTHON" -m venv "$venv"
    # shellcheck disable=SC2086
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check $pins
    echo "$pins" >"$venv/.pins"
fi
PY=$venv/bin/python

if [[ ! -f $MODELS_DIR/cnn_medium.onnx || ! -f $MODELS_DIR/mnist_cnn.onnx ]]; then
    "$PY" "$BENCH_TOOLS/build_bench_models.py" "$MODELS_DIR"
fi

cargo build --release --locked --example model_bench
BENCH=target/release/examples/model_bench

# Runs a command and prints its output, then `peak_rss_kb=N` of the command's
# process tree.
with_rss() {
    "$PY" -c '
import resource, subprocess, sys
r = subprocess.run(sys.argv[1:])
print("peak_rss_kb=%d" % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(r.returncode)' "$@"
}

field() { # field KEY LINE
    sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$2"
}

rows=()
rss_rows=()
ort_version=$("$PY" -c 'import onnxruntime; print(onnxruntime.__version__)')
for model in mnist_cnn cnn_medium; do
    for t in "${THREADS[@]}"; do
        for b in "${BATCHES[@]}"; do
            ort_out=$(with_rss "$PY" "$BENCH_TOOLS/bench_ort.py" "$MODELS_DIR/$model.onnx" \
                --threads "$t" --batches "$b" --secs "$SECS")
            # The last table line: threads batch median p10 p90 runs img/s GFLOP/s.
            read -r _ _ _ _ _ _ ort_ips ort_gflops < <(grep -E '^ +[0-9]' <<<"$ort_out" | tail -1)
            ort_rss=$(field peak_rss_kb "$ort_out")
            ours=$("$BENCH" --model "$MODELS_DIR/$model.onnx" --batch "$b" --threads "$t" --seconds "$SECS")
            ips=$(field images_per_sec "$ours")
            gflops=$(field gflops "$ours")
            rss=$(field peak_rss_kb "$ours")
            ratio=$(awk -v a="$ips" -v b="$ort_ips" 'BEGIN { printf "%.2f", a / b }')
            printf 'model=%s threads=%s batch=%s ferroserve_images_per_sec=%s onnxruntime_images_per_sec=%s ratio=%s\n' \
                "$model" "$t" "$b" "$ips" "$ort_ips" "$ratio"
            rows+=("| $model | $t | $b | $ips | $ort_ips | **$ratio** | $gflops | $ort_gflops |")
            if [[ $t == 2 && $b == 64 ]]; then
                rss_ratio=$(awk -v a="$rss" -v b="$ort_rss" 'BEGIN { printf "%.2f", a / b }')
                rss_rows+=("| $model | $((rss / 1024)) | $((ort_rss / 1024)) | $rss_ratio |")
            fi
        done
    done
done

section=$(
    echo "<!-- kernel-speed:begin (written by scripts/bench.sh) -->"
    echo "## Kernel speed against onnxruntime"
    echo
    echo "- Command: \`bash scripts/bench.sh\` (${SECS} s of timed runs per configuration)"
    echo "- Commit: \`$(git rev-parse --short HEAD)\`$(git diff --quiet HEAD -- src examples Cargo.toml || echo ' with uncommitted changes')"
    echo "- CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores"
    echo "- Peer: onnxruntime $ort_version (CPU execution provider, all graph optimizations, sequential execution)"
    echo "- Date: $(date -u +%Y-%m-%d)"
    echo
    echo "Images per second at the median single run after a warm-up, each run called on a thread of the"
    echo "compute pool as onnxruntime's session is called on its caller's; GFLOP/s counts 2 x the multiply-adds of"
    echo "Conv, Gemm and MatMul. Ratio = ferroserve / onnxruntime (above 1: ferroserve is faster)."
    echo
    echo "| model | threads | batch | ferroserve img/s | onnxruntime img/s | ratio | ferroserve GFLOP/s | onnxruntime GFLOP/s |"
    echo "|---|---|---|---|---|---|---|---|"
    printf '%s\n' "${rows[@]}"
    echo
    echo "Peak RSS of the benchmark process at batch 64, 2 threads (MiB; onnxruntime's includes its Python interpreter):"
    echo
    echo "| model | ferroserve | onnxruntime | ratio |"
    echo "|---|---|---|---|"
    printf '%s\n' "${rss_rows[@]}"
    echo "<!-- kernel-speed:end -->"
)

if [[ -f $OUT ]] && grep -q '<!-- kernel-speed:begin' "$OUT"; then
    SECTION=$section "$PY" - "$OUT" <<'EOF'
import os, re, sys
path = sys.argv[1]
text = open(path).read()
text = re.sub(r"<!-- kernel-speed:begin.*?<!-- kernel-speed:end -->", lambda _: os.environ["SECTION"], text, flags=re.S)
open(path, "w").write(text)
EOF
else
    {
        [[ -f $OUT ]] && cat "$OUT" && echo
        [[ -f $OUT ]] || printf '# Benchmarks\n\nFigures measured on this kind of machine, each next to its peer measured in the same run.\n\n'
        echo "$section"
    } >"$OUT.tmp"
    mv "$OUT.tmp" "$OUT"
fi
echo "bench.sh: wrote $OUT"
