#!/usr/bin/env python3
"""Summarizes a bench/run.sh results folder into one markdown table.

    python3 bench/report.py bench/results/<time>

Reads raw/<model>.t<threads>.r<round>.<program>.{json,time,stat} and
raw/membw.t<threads>.json; writes table.md and summary.json beside raw/ and
prints the table. Standard library only, except gguf-py (gguf==0.19.0) for the
weight bytes of the bandwidth bound.

Per (model, threads, test, program): the median over rounds of each round's
mean t/s (llama-bench's avg_ts; edgellama bench reports the same field), and
the largest peak RSS over the rounds. "other CPU" is the share of all CPUs that
processes other than the measured one used while it ran (from /proc/stat
around the run minus the run's own user+system time): timings are only
comparable when it is near 0.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from pathlib import Path

PROGRAMS = ("llama.cpp", "edgellama")
TESTS = (("pp", "n_prompt"), ("tg", "n_gen"))

LABELS = {
    "smollm2-q4_1": ("SmolLM2-135M-Instruct", "Q4_1 (as shipped)"),
    "smollm2-q8_0": ("SmolLM2-135M-Instruct", "Q8_0"),
    "smollm2-q4_k_m": ("SmolLM2-135M-Instruct", "Q4_K_M"),
    "smollm2-f16": ("SmolLM2-135M-Instruct", "F16"),
    "1b-q4_k_m": ("Llama-3.2-1B-shaped", "Q4_K_M"),
    "1b-q8_0": ("Llama-3.2-1B-shaped", "Q8_0"),
    "3b-q4_k_m": ("Llama-3.2-3B-shaped", "Q4_K_M"),
    "3b-q8_0": ("Llama-3.2-3B-shaped", "Q8_0"),
}
BOUND_MODEL = "1b-q4_k_m"


def read_json(path: Path) -> object | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_time(path: Path) -> dict[str, float | None]:
    """GNU time's "%M %U %S %e" line (the last one: a failing command gets a
    'Command exited with non-zero status' line first)."""
    try:
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    except OSError:
        return {}
    if not lines:
        return {}
    fields = lines[-1].split()
    names = ("peak_kb", "user_s", "sys_s", "wall_s")

    def num(s: str) -> float | None:
        try:
            return float(s)
        except ValueError:
            return None

    return {n: num(f) for n, f in zip(names, fields)}


def other_cpu_share(stat: Path, t: dict[str, float | None]) -> float | None:
    """Share of all CPU time during the run used by other processes."""
    try:
        before, after = (ln.split() for ln in stat.read_text().splitlines()[:2])
    except (OSError, ValueError):
        return None
    a = [int(x) for x in before[1:9]]
    b = [int(x) for x in after[1:9]]
    total = sum(b) - sum(a)
    idle = (b[3] + b[4]) - (a[3] + a[4])
    if total <= 0 or t.get("user_s") is None or t.get("sys_s") is None:
        return None
    hz = os.sysconf("SC_CLK_TCK")
    ours = (t["user_s"] or 0.0) + (t["sys_s"] or 0.0)
    return max(0.0, ((total - idle) / hz - ours) / (total / hz))


def weight_bytes_per_token(path: Path) -> int | None:
    """Bytes of weights one generated token streams: every tensor, except that
    with an untied output matrix the embedding table is only looked up (one
    row). The KV cache read during tg128 (~2 MB for the 1B shape) is left out."""
    try:
        from gguf import GGUFReader
    except ImportError:
        return None
    try:
        r = GGUFReader(str(path))
    except (OSError, ValueError):
        return None
    sizes = {t.name: int(t.n_bytes) for t in r.tensors}
    total = sum(sizes.values())
    if "output.weight" in sizes:
        total -= sizes.get("token_embd.weight", 0)
    return total


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: report.py RESULTS_DIR")
    out = Path(sys.argv[1])
    raw = out / "raw"
    meta = {}
    if (out / "meta.txt").is_file():
        for ln in (out / "meta.txt").read_text().splitlines():
            k, _, v = ln.partition("=")
            meta[k] = v
    models = []
    for ln in (out / "models.tsv").read_text().splitlines():
        key, path, reps = ln.split("\t")
        models.append((key, Path(path), int(reps)))
    threads = [int(t) for t in meta.get("threads", "1 2").split()]

    bandwidth = {}
    for t in threads:
        bw = read_json(raw / f"membw.t{t}.json")
        if isinstance(bw, dict):
            bandwidth[t] = bw

    rows = []
    for key, path, reps in models:
        for t in threads:
            runs: dict[str, list[tuple[dict, dict, float | None]]] = {p: [] for p in PROGRAMS}
            for prog in PROGRAMS:
                rnd = 1
                while (raw / f"{key}.t{t}.r{rnd}.{prog}.time").exists():
                    base = raw / f"{key}.t{t}.r{rnd}.{prog}"
                    res = read_json(base.with_name(base.name + ".json"))
                    tm = read_time(base.with_name(base.name + ".time"))
                    share = other_cpu_share(base.with_name(base.name + ".stat"), tm)
                    runs[prog].append((res if isinstance(res, list) else [], tm, share))
                    rnd += 1
            for test, field in TESTS:
                row = {"model": key, "file": path.name, "threads": t, "test": test, "reps": reps}
                for prog in PROGRAMS:
                    ts, samples = [], []
                    for res, _, _ in runs[prog]:
                        for o in res:
                            if isinstance(o, dict) and o.get(field, 0) > 0 and o.get(
                                "n_gen" if field == "n_prompt" else "n_prompt", 0
                            ) == 0:
                                ts.append(float(o["avg_ts"]))
                                samples += [float(x) for x in o.get("samples_ts", [])]
                                row[f"{test}_n"] = o[field]
                    rss = [tm["peak_kb"] for _, tm, _ in runs[prog] if tm.get("peak_kb") is not None]
                    shares = [s for _, _, s in runs[prog] if s is not None]
                    row[prog] = {
                        "round_avg_ts": ts,
                        "samples_ts": samples,
                        "median_ts": statistics.median(ts) if ts else None,
                        "rounds_ok": len(ts),
                        "rounds_run": len(runs[prog]),
                        "peak_rss_mib": max(rss) / 1024 if rss else None,
                        "other_cpu_max": max(shares) if shares else None,
                    }
                a, b = row["llama.cpp"]["median_ts"], row["edgellama"]["median_ts"]
                row["ratio"] = b / a if a and b else None
                rows.append(row)

    def f(x: float | None, fmt: str) -> str:
        return "failed" if x is None else format(x, fmt)

    lines = [
        "| model | type | threads | test | llama.cpp t/s | edgellama t/s | ratio | llama.cpp RSS MiB "
        "| edgellama RSS MiB | other CPU |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        name, typ = LABELS.get(r["model"], (r["model"], ""))
        lc, el = r["llama.cpp"], r["edgellama"]
        n = r.get(f"{r['test']}_n", 512 if r["test"] == "pp" else 128)
        shares = [s for s in (lc["other_cpu_max"], el["other_cpu_max"]) if s is not None]
        lines.append(
            f"| {name} | {typ} | {r['threads']} | {r['test']}{n} | {f(lc['median_ts'], '.2f')} "
            f"| {f(el['median_ts'], '.2f')} | {f(r['ratio'], '.2f')} | {f(lc['peak_rss_mib'], '.0f')} "
            f"| {f(el['peak_rss_mib'], '.0f')} | {f(max(shares) if shares else None, '.0%')} |"
        )

    bound = []
    bw_note = []
    for t, bw in sorted(bandwidth.items()):
        bw_note.append(f"{t} thread{'s' if t > 1 else ''} {bw['best_gbs']:.1f} GB/s (median {bw['median_gbs']:.1f})")
    bound_file = next((p for k, p, _ in models if k == BOUND_MODEL), None)
    wbytes = weight_bytes_per_token(bound_file) if bound_file else None
    if wbytes:
        for r in rows:
            if r["model"] != BOUND_MODEL or r["test"] != "tg" or r["threads"] not in bandwidth:
                continue
            limit = bandwidth[r["threads"]]["best_gbs"] * 1e9 / wbytes
            entry = {"threads": r["threads"], "bound_ts": limit}
            for prog in PROGRAMS:
                ts = r[prog]["median_ts"]
                entry[prog] = None if ts is None else ts / limit
            bound.append(entry)

    text = "\n".join(lines) + "\n"
    text += (
        "\nt/s: median over rounds of each run's mean; ratio: edgellama / llama.cpp; RSS: largest peak "
        "over the rounds; other CPU: the largest share of all CPUs that other processes used during "
        "any of the row's runs (0% on an idle machine).\n"
    )
    if bw_note:
        text += (
            "\nMemory read bandwidth (bench/membw.c: threads sum disjoint slices of a 1 GiB buffer, "
            "best of 10 passes): " + ", ".join(bw_note) + ".\n"
        )
    if bound:
        text += (
            f"\nBandwidth bound, {LABELS[BOUND_MODEL][0]} {LABELS[BOUND_MODEL][1]}: "
            f"{wbytes / 1e6:.1f} MB of weights read per generated token (all tensors; the tied "
            "embedding table is the output matrix).\n\n"
            "| threads | bound t/s | llama.cpp tg128 % of bound | edgellama tg128 % of bound |\n"
            "| ---: | ---: | ---: | ---: |\n"
        )
        for e in bound:
            text += (
                f"| {e['threads']} | {e['bound_ts']:.2f} | {f(e['llama.cpp'], '.0%')} "
                f"| {f(e['edgellama'], '.0%')} |\n"
            )
    (out / "table.md").write_text(text)
    summary = {
        "meta": meta,
        "bandwidth": bandwidth,
        "weight_bytes_per_token": {BOUND_MODEL: wbytes} if wbytes else {},
        "bandwidth_bound": bound,
        "rows": rows,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(text, end="")


if __name__ == "__main__":
    main()
