#!/usr/bin/env python3
"""Draws docs/replay.png from the bench's JSON lines: replay time against retained history, log scale.

    python3 examples/bench/plot_replay.py docs/bench/results.jsonl docs/replay.png
    python3 examples/bench/plot_replay.py docs/bench/results.jsonl docs/bench/issue14.jsonl docs/replay.png

With several result files, the runs of a (backend, history) in a later file
replace those of earlier files: newer measurements of the same point.

Plots the median over runs of each run's `median_ms`, for ssehub on each backend
found, the old design's algorithm run by the bench in Rust (`baseline_median_ms`),
and the Python service's reference figures. Needs matplotlib (`pip install matplotlib`).
"""

import json
import statistics
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# The Python service (redis-py, XRANGE key - + and a linear scan) on this machine kind.
PYTHON_REFERENCE_MS = {1_000: 53.0, 10_000: 1_171.0, 100_000: 9_683.0}


def load(path):
    """(backend, history) -> [median_ms], and the same for the baselines, from ok replay lines."""
    ssehub, baseline = defaultdict(list), defaultdict(list)
    with open(path) as lines:
        for line in lines:
            line = line.strip()
            if not line.startswith("{"):
                continue
            run = json.loads(line)
            if run.get("scenario") != "replay" or not run.get("ok") or run.get("quick"):
                continue
            key = (run["backend"], run["history"])
            if run.get("side") in ("both", "ssehub") and run.get("median_ms") is not None:
                ssehub[key].append(run["median_ms"])
            if run.get("side") == "both" and run.get("baseline_median_ms") is not None:
                baseline[key].append(run["baseline_median_ms"])
            elif run.get("side") == "baseline" and run.get("median_ms") is not None:
                baseline[key].append(run["median_ms"])
    return ssehub, baseline


def series(runs, backend):
    points = sorted((history, statistics.median(ms)) for (b, history), ms in runs.items() if b == backend)
    return [p[0] for p in points], [p[1] for p in points]


def label_points(ax, xs, ys, color, below=False):
    for x, y in zip(xs, ys):
        if y >= 10:
            text = f"{y:,.0f} ms"
        elif y >= 1:
            text = f"{y:.2f} ms"
        else:
            text = f"{y * 1000:.3g} µs"
        offset = (8, -12) if below else (6, 5)
        ax.annotate(text, (x, y), textcoords="offset points", xytext=offset, fontsize=8, color=color)


def load_all(paths):
    """`load` over several files; a later file's (backend, history) points replace earlier ones'."""
    ssehub, baseline = {}, {}
    for path in paths:
        newer_ssehub, newer_baseline = load(path)
        for key in set(newer_ssehub) | set(newer_baseline):
            ssehub.pop(key, None)
            baseline.pop(key, None)
        ssehub.update(newer_ssehub)
        baseline.update(newer_baseline)
    return ssehub, baseline


def main(results, output):
    ssehub, baseline = load_all(results)
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    xs = sorted(PYTHON_REFERENCE_MS)
    ys = [PYTHON_REFERENCE_MS[x] for x in xs]
    ax.plot(xs, ys, "o-", color="#b22222", linewidth=2, label="Python service (reference)")
    label_points(ax, xs, ys, "#b22222", below=True)
    styles = {
        "fred": ("#1f77b4", "ssehub, Redis (fred)", "XRANGE - + and a scan, in Rust (fred)"),
        "memory": ("#2ca02c", "ssehub, in memory", "linear scan of a Vec, in Rust (memory)"),
    }
    for backend, (color, label, baseline_label) in styles.items():
        xs, ys = series(ssehub, backend)
        if xs:
            ax.plot(xs, ys, "s-", color=color, linewidth=2, label=label)
            label_points(ax, xs, ys, color)
        xs, ys = series(baseline, backend)
        if xs:
            ax.plot(xs, ys, "^--", color=color, linewidth=1, alpha=0.6, label=f"old algorithm: {baseline_label}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks([1_000, 10_000, 100_000])
    ax.set_xticklabels(["1k", "10k", "100k"])
    ax.set_xlabel("retained events (history)")
    ax.set_ylabel("replay time, ms (median; log scale)")
    ax.set_title("Last-Event-ID replay of the last 10 events")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(output)
    print(f"wrote {output}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1:-1], sys.argv[-1])
