#!/usr/bin/env python3
"""Summarizes a bench/vision/run.sh results file as a markdown table.

    python3 bench/vision/report.py bench/vision/results/<time>.jsonl

Per thread count and program (edgellama-TYPE for each vision type,
torch-f32, torch-bf16): the median
over rounds of each run's mean time per image (avg_ns), the spread of those
means (min-max), the largest peak RSS over the rounds (GNU time's maximum
resident set size), and the largest share of the CPUs other processes used
during a run (timings are only comparable when it is near 0). The ratio is
edgellama's median time over the faster torch variant's at the same thread
count (below 1: edgellama is faster), for each edgellama vision type.
Standard library only.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict

TORCH = ("torch-f32", "torch-bf16")


def main(path: str) -> int:
    rows = [json.loads(line) for line in open(path) if line.strip()]
    runs = [r for r in rows if "program" in r and "check" not in r]
    checks = [r for r in rows if "check" in r]
    by = defaultdict(list)
    for r in runs:
        if r.get("exit") == 0 and "avg_ns" in r:
            by[(r["n_threads"], r["program"])].append(r)
    failed = [r for r in runs if r.get("exit") != 0 or "avg_ns" not in r]

    mine = sorted({r["program"] for r in runs if r["program"].startswith("edgellama")})
    programs = mine + list(TORCH)
    first = next((r for r in runs if r["program"].startswith("edgellama") and "avg_ns" in r), None)
    if first:
        print(
            f"image {first['image_width']}x{first['image_height']} ({first['n_tiles']} tiles, "
            f"{first['n_image_tokens']} tokens); tower {first['vision_n_layer']} local + "
            f"{first['vision_n_global']} global layers of width {first['vision_n_embd']}"
        )
        print()
    print("| threads | program | s/image (median) | range | peak RSS MiB | other CPU % | rounds |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    threads = sorted({t for t, _ in by})
    med = {}
    for t in threads:
        for p in programs:
            rs = by.get((t, p))
            if not rs:
                continue
            means = [r["avg_ns"] / 1e9 for r in rs]
            med[(t, p)] = statistics.median(means)
            rss = max(r.get("peak_rss_kb", 0) for r in rs) / 1024
            other = max(r.get("other_cpu_pct", 0.0) for r in rs)
            print(
                f"| {t} | {p} | {med[(t, p)]:.2f} | {min(means):.2f}-{max(means):.2f} "
                f"| {rss:.0f} | {other:.0f} | {len(rs)} |"
            )
    print()
    for t in threads:
        torch = [(med[(t, p)], p) for p in TORCH if (t, p) in med]
        for p in mine:
            if (t, p) in med and torch:
                best, name = min(torch)
                print(f"-t {t}: {p} / {name} (the faster torch) = {med[(t, p)] / best:.2f} "
                      f"({best / med[(t, p)]:.2f}x as fast)")
    for c in checks:
        if "rel_max_diff" in c:
            bound = f"; below {c['tolerance']}: {'ok' if c['pass'] else 'FAILS'}" if "tolerance" in c else ""
            print(f"check: {c['check']}: max |diff| / max |torch| = {c['rel_max_diff']:.2e}, "
                  f"rms ratio {c['rel_rms_diff']:.2e} (shape {c['torch_shape']}{bound})")
        else:
            print(f"check: {c['check']}: FAILS ({c.get('error') or 'shapes differ'}: "
                  f"{c.get('shape')} vs {c.get('torch_shape')})")
    for r in failed:
        print(f"failed: {r['program']} -t {r['n_threads']} round {r['round']} (exit {r.get('exit')})")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
