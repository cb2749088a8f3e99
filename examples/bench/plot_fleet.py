#!/usr/bin/env python3
"""Draws docs/fleet.png from a fleet run's JSON line: latency and deliveries over the run, chaos marked.

    python3 examples/bench/plot_fleet.py docs/bench/fleet.jsonl docs/fleet.png [CONNECTIONS]

Takes the last run in the file that has a timeline and is not --quick (or, with
CONNECTIONS, the last one of that size). The top panel draws the publish-to-client
latency p50, p99 and max of the deliveries that arrived in each second (log
scale); the bottom one the deliveries each second. Every chaos step is a
vertical line, labelled, with the time until every dropped connection was live
again shaded after it. Needs matplotlib (`pip install matplotlib`).
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load(path, connections=None):
    """The last full fleet run with a timeline in the file (of `connections`, if given)."""
    run = None
    with open(path) as lines:
        for line in lines:
            line = line.strip()
            if not line.startswith("{"):
                continue
            parsed = json.loads(line)
            if parsed.get("scenario") != "fleet" or parsed.get("quick") or "timeline" not in parsed:
                continue
            if connections is not None and parsed.get("connections") != connections:
                continue
            run = parsed
    if run is None:
        sys.exit(f"{path}: no full fleet run with a timeline")
    return run


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    run = load(sys.argv[1], int(sys.argv[3]) if len(sys.argv) == 4 else None)
    # Runs before the timeline left out the end markers (latency 0) put them in a last second of their own.
    timeline = [s for s in run["timeline"] if s["deliveries"] > 0 and s["max_ms"] > 0]
    t = [s["t_s"] for s in timeline]
    figure, (latency, rate) = plt.subplots(2, 1, figsize=(11, 7), sharex=True, height_ratios=[2, 1])
    latency.plot(t, [s["max_ms"] for s in timeline], color="#bbbbbb", label="max", linewidth=1)
    latency.plot(t, [s["p99_ms"] for s in timeline], color="#d62728", label="p99", linewidth=1.5)
    latency.plot(t, [s["p50_ms"] for s in timeline], color="#1f77b4", label="p50", linewidth=1.5)
    latency.set_yscale("log")
    latency.set_ylabel("publish → client (ms)")
    rate.plot(t, [s["deliveries"] for s in timeline], color="#2ca02c", linewidth=1.2)
    rate.set_ylabel("deliveries / s")
    rate.set_xlabel("seconds since publishing began")
    labels = {
        "rolling_restart": "rolling restart",
        "sigkill_server": "SIGKILL server",
        "sigkill_master": "SIGKILL master",
        "client_kill_pubsub": "CLIENT KILL pub/sub",
        "sigstop_master": "SIGSTOP master 3 s",
    }
    for step in run["chaos"]:
        for axis in (latency, rate):
            axis.axvline(step["at_s"], color="black", linestyle="--", linewidth=0.8)
            if step["all_live_again_s"] > 0:
                axis.axvspan(step["at_s"], step["at_s"] + step["all_live_again_s"], color="orange", alpha=0.15)
        latency.annotate(
            labels.get(step["event"], step["event"]),
            (step["at_s"], 1.0),
            xycoords=("data", "axes fraction"),
            rotation=90,
            va="top",
            ha="right",
            fontsize=8,
        )
    latency.legend(loc="lower right")
    exact = "exact" if run.get("exact") else "NOT exact"
    figure.suptitle(
        f"fleet: {run['connections']:,} connections on {run['servers']} server processes, "
        f"3 masters + 3 replicas, one {run.get('cores', '?')}-core machine: {run['deliveries']:,} deliveries, {exact}\n"
        "dashed: a chaos step; shaded: until every connection it dropped was live again",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(sys.argv[2], dpi=110)


if __name__ == "__main__":
    main()
