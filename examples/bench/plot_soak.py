#!/usr/bin/env python3
"""Draws docs/soak.png from a soak run's JSON line: hub RSS and Redis used_memory over the run.

    python3 examples/bench/plot_soak.py docs/bench/soak.jsonl docs/soak.png

Takes the last non-quick soak line of the file. Both curves are drawn against
the sample times (`sample_at_s`), with the warmup shaded and each curve's
growth after the warmup (the last sample, and the largest, over the first
sample at or after the warmup) in the legend. Needs matplotlib
(`pip install matplotlib`).
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load(path):
    """The last full (not --quick) soak run in the file."""
    run = None
    with open(path) as lines:
        for line in lines:
            line = line.strip()
            if not line.startswith("{"):
                continue
            parsed = json.loads(line)
            if parsed.get("scenario") == "soak" and not parsed.get("quick"):
                run = parsed
    if run is None:
        sys.exit(f"no soak run in {path}")
    return run


def percent(growth):
    return "n/a" if growth is None else f"{growth * 100:+.1f}%"


def main(results, output):
    run = load(results)
    minutes = [t / 60 for t in run["sample_at_s"]]
    rss_mib = [kib / 1024 for kib in run["rss_kib_samples"]]
    redis_mib = [b / (1024 * 1024) for b in run["redis_memory_samples"]]
    warmup_min = run["warmup_s"] / 60

    fig, ax = plt.subplots(figsize=(9, 5), dpi=120)
    ax.axvspan(0, warmup_min, color="#dddddd", alpha=0.6, label=f"warmup ({run['warmup_s']} s)")
    ax.plot(
        minutes,
        rss_mib,
        "-",
        color="#1f77b4",
        linewidth=2,
        label="hub process RSS: after warmup "
        f"{percent(run['rss_growth_after_warmup'])} (max {percent(run['rss_max_growth_after_warmup'])})",
    )
    ax.plot(
        minutes,
        redis_mib,
        "-",
        color="#b22222",
        linewidth=2,
        label="Redis used_memory: after warmup "
        f"{percent(run['redis_memory_growth_after_warmup'])} "
        f"(max {percent(run['redis_memory_max_growth_after_warmup'])})",
    )
    ax.set_xlim(0, max(minutes))
    ax.set_ylim(0, max(max(rss_mib), max(redis_mib)) * 1.25)
    ax.set_xlabel("minutes")
    ax.set_ylabel("MiB")
    ax.set_title(
        f"soak, Redis backend: {run['rate']:,} events/s, {run['subscribers']:,} subscribers, "
        f"{run['resume_percent']}%/s resuming; exactly once: {run['exactly_once']}",
        fontsize=10,
    )
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(output)
    print(f"wrote {output}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
