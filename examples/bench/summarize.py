#!/usr/bin/env python3
"""Medians over runs of the bench's JSON lines, as the Markdown tables of BENCHMARKS.md.

    python3 examples/bench/summarize.py docs/bench/results.jsonl

Only full-size (non --quick) runs that measured both sides are summarized;
a run whose checks failed is counted and reported, never silently dropped.
"""

import json
import statistics
import sys
from collections import defaultdict

COLUMNS = {
    "fanout": ["deliveries", "expected", "seconds", "deliveries_per_s", "events_per_s", "redis_connections",
               "peak_rss_kib", "baseline_seconds", "baseline_deliveries_per_s", "baseline_events_per_s",
               "baseline_redis_connections", "ratio"],
    "replay": ["returned", "median_ms", "baseline_median_ms", "python_reference_ms", "ratio"],
    "idle": ["subscriptions", "subscribe_per_s", "bytes_per_subscription", "heap_bytes_per_subscription",
             "peak_rss_kib", "redis_connections", "baseline_subscribe_per_s", "baseline_bytes_per_subscription",
             "ratio"],
    "latency": ["deliveries", "expected", "p50_us", "p99_us", "max_us", "baseline_p50_us", "baseline_p99_us",
                "baseline_max_us", "ratio"],
}


def fmt(value):
    if value is None:
        return "–"
    if isinstance(value, float):
        if value >= 1000:
            return f"{value:,.0f}"
        if value >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def main(path):
    groups = defaultdict(list)
    failed = defaultdict(int)
    with open(path) as lines:
        for line in lines:
            line = line.strip()
            if not line.startswith("{"):
                continue
            run = json.loads(line)
            if run.get("quick") or run.get("side") != "both":
                continue
            key = (run["scenario"], run["backend"], run.get("history"))
            if run.get("ok"):
                groups[key].append(run)
            else:
                failed[key] += 1
    for scenario, columns in COLUMNS.items():
        keys = sorted(k for k in groups if k[0] == scenario)
        if not keys:
            continue
        print(f"\n### {scenario}\n")
        head = ["backend"] + (["history"] if scenario == "replay" else []) + ["runs"] + columns + ["load 1m"]
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for key in keys:
            runs = groups[key]
            row = [key[1]] + ([fmt(key[2])] if scenario == "replay" else [])
            row.append(f"{len(runs)}" + (f" (+{failed[key]} failed)" if failed[key] else ""))
            for column in columns:
                values = [r[column] for r in runs if isinstance(r.get(column), (int, float))]
                row.append(fmt(statistics.median(values)) if values else "–")
            loads = [r["load_1m_before"] for r in runs if r.get("load_1m_before") is not None]
            row.append(f"{min(loads):.2f}–{max(loads):.2f}" if loads else "–")
            print("| " + " | ".join(row) + " |")
    for key, count in sorted(failed.items()):
        if key not in groups:
            print(f"\n{count} failed run(s) of {key[0]} {key[1]} {key[2] or ''}: see the JSON lines")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
