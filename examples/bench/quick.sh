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
# Runs `bench ARGS... --quick`; fails the script unless its line says "ok":true and holds EXPECT (if given).
quick() {
  local expect="" line
  if [[ $1 == --expect ]]; then expect=$2; shift 2; fi
  echo "==== bench $* --quick" >&2
  if line=$("$bench" "$@" --quick) && [[ $line == *'"ok":true'* && $line == *"$expect"* ]]; then
    echo "$line"
  else
    echo "$line"
    echo "FAILED: bench $* --quick" >&2
    failed=1
  fi
}

for backend in $backends; do
  for scenario in fanout replay idle latency http; do
    quick "$scenario" --backend "$backend"
  done
done
# HTTP/2 without TLS (h2c), a connection per stream and 10 streams sharing each: every frame counted.
quick --expect '"protocol":"h2c"' http --http2 1
quick --expect '"tcp_connections":5,' http --http2 1 --streams-per-connection 10
# The compressed stream: the client decodes gzip and must still count every frame.
quick --expect '"gzip_streams":50' http --gzip 1 --payload demo
# The capacity, soak, groups and fleet scenarios are for the Redis backend only (the soak: a few seconds of its
# mixed load, every resume checked exactly once; the fleet: a private cluster with replicas, 2 server processes,
# 300 reconnecting clients and the whole chaos script, every client's log checked exactly once).
case " $backends " in *" fred "*)
  quick capacity --backend fred
  quick soak --backend fred
  quick groups --backend fred --no-presence
  quick fleet --backend fred
  ;;
esac
exit "$failed"
