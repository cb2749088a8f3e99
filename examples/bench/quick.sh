#!/usr/bin/env bash
# CI check of the bench: every scenario on every backend in --quick mode; fails if any count is off.
#
#   examples/bench/quick.sh                  # memory and fred (fred starts a private redis-server)
#   BENCH_BACKENDS=memory examples/bench/quick.sh
#
# Quick mode checks deliveries == expected (and the replay's returned count, and
# that every idle subscription is live), not times, so a debug build is enough.
set -euo pipefail
cd "$(dirname "$0")/../.."

backends="${BENCH_BACKENDS:-memory fred}"
features=memory
case " $backends " in *" fred "*) features=memory,fred ;; esac

cargo build --example bench --features "$features"
bench=target/debug/examples/bench

failed=0
for backend in $backends; do
  for scenario in fanout replay idle latency; do
    echo "==== bench $scenario --backend $backend --quick" >&2
    if line=$("$bench" "$scenario" --backend "$backend" --quick) && [[ $line == *'"ok":true'* ]]; then
      echo "$line"
    else
      echo "$line"
      echo "FAILED: bench $scenario --backend $backend --quick" >&2
      failed=1
    fi
  done
done
# The soak runs on the Redis backend only: a few seconds of its mixed load, every resume checked exactly once.
case " $backends " in *" fred "*)
  echo "==== bench soak --backend fred --quick" >&2
  if line=$("$bench" soak --backend fred --quick) && [[ $line == *'"ok":true'* ]]; then
    echo "$line"
  else
    echo "$line"
    echo "FAILED: bench soak --backend fred --quick" >&2
    failed=1
  fi
  ;;
esac
exit "$failed"
