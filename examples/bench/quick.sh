#!/usr/bin/env bash
# CI check of the bench: every scenario on every backend in --quick mode; fails if any count is off.
#
#   examples/bench/quick.sh                  # memory and fred (fred starts a private redis-server)
#   BENCH_BACKENDS=memory examples/bench/quick.sh
#
# Quick mode checks deliveries == expected (and the replay's returned count, that
# every idle subscription is live, and that the http client read every frame from
# the server process), not times, so a debug build is enough.
set -euo pipefail
cd "$(dirname "$0")/../.."

backends="${BENCH_BACKENDS:-memory fred}"
features=memory,gzip
case " $backends " in *" fred "*) features=memory,fred,gzip ;; esac

cargo build --example bench --features "$features"
bench=target/debug/examples/bench

failed=0
for backend in $backends; do
  for scenario in fanout replay idle latency http; do
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
# The capacity scenario is for the Redis backend only.
case " $backends " in *" fred "*)
  echo "==== bench capacity --backend fred --quick" >&2
  if line=$("$bench" capacity --backend fred --quick) && [[ $line == *'"ok":true'* ]]; then
    echo "$line"
  else
    echo "$line"
    echo "FAILED: bench capacity --backend fred --quick" >&2
    failed=1
  fi ;;
esac
# The compressed stream: the client decodes gzip and must still count every frame.
echo "==== bench http --quick --gzip 1 --payload demo" >&2
if line=$("$bench" http --quick --gzip 1 --payload demo) && [[ $line == *'"ok":true'* && $line == *'"gzip_streams":50'* ]]; then
  echo "$line"
else
  echo "$line"
  echo "FAILED: bench http --quick --gzip 1 --payload demo" >&2
  failed=1
fi
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
