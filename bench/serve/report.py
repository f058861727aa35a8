#!/usr/bin/env python3
"""Summarizes a bench/serve results file: per server and concurrency, the
median over rounds of tokens/s and of p50/p99 time to first token, and the
ratio of the first label to the second (edgellama / llama-server, or for
shield.sh's files shielded / plain).

  report.py bench/serve/results/<date>.jsonl
"""

import json
import statistics
import sys
from collections import defaultdict


def main(path):
    rows = [json.loads(l) for l in open(path) if l.strip()]
    by = defaultdict(list)
    for r in rows:
        by[(r["label"], r["concurrency"])].append(r)
    levels = sorted({c for _, c in by})
    labels = list(dict.fromkeys(r["label"] for r in rows))
    if set(labels) == {"edgellama", "llama-server"}:
        labels = ["edgellama", "llama-server"]
    elif set(labels) == {"plain", "shielded"}:
        labels = ["shielded", "plain"]
    med = lambda rs, k: statistics.median(r[k] for r in rs)
    print("| streams | server | tokens/s | TTFT p50 ms | TTFT p99 ms | failed |")
    print("|---:|---|---:|---:|---:|---:|")
    for c in levels:
        for label in labels:
            rs = by.get((label, c))
            if not rs:
                continue
            print(f"| {c} | {label} | {med(rs, 'tokens_per_s'):.1f} | {med(rs, 'ttft_p50_ms'):.0f} "
                  f"| {med(rs, 'ttft_p99_ms'):.0f} | {sum(r['failed'] for r in rs)} |")
    print()
    if len(labels) != 2:
        return
    a, b = labels
    for c in levels:
        e, l = by.get((a, c)), by.get((b, c))
        if e and l:
            print(f"{c} streams: throughput x{med(e, 'tokens_per_s') / med(l, 'tokens_per_s'):.2f}, "
                  f"p50 TTFT x{med(e, 'ttft_p50_ms') / med(l, 'ttft_p50_ms'):.2f}, "
                  f"p99 TTFT x{med(e, 'ttft_p99_ms') / med(l, 'ttft_p99_ms'):.2f} ({a} / {b})")


if __name__ == "__main__":
    main(sys.argv[1])
