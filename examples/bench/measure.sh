#!/usr/bin/env bash
# The measurements of BENCHMARKS.md: every scenario at its full size, RUNS times, JSON lines appended to a file.
#
#   examples/bench/measure.sh [results.jsonl]     # default docs/bench/results.jsonl
#   RUNS=3 BACKENDS="memory fred" examples/bench/measure.sh
#
# Each line is one run of ssehub beside its baseline; BENCHMARKS.md reports the
# medians over the runs. Progress and the machine's load go to stderr.
set -euo pipefail
cd "$(dirname "$0")/../.."

out="${1:-docs/bench/results.jsonl}"
runs="${RUNS:-3}"
backends="${BACKENDS:-memory fred}"
scenarios="${SCENARIOS:-fanout replay idle latency}"
features=memory
case " $backends " in *" fred "*) features=memory,fred ;; esac

mkdir -p "$(dirname "$out")"
cargo build --release --example bench --features "$features"
bench=target/release/examples/bench

run() {
  echo "==== $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg): bench $*" >&2
  "$bench" "$@" | tee -a "$out"
}

for _ in $(seq "$runs"); do
  for backend in $backends; do
    for scenario in $scenarios; do
      case $scenario in
        replay)
          for history in 1000 10000 100000; do run replay --backend "$backend" --history "$history"; done ;;
        *)
          run "$scenario" --backend "$backend" ;;
      esac
    done
  done
done
