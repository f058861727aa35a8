#!/usr/bin/env python3
"""Bounded soak of `edgellama serve`: C concurrent streams for a fixed time
(default 16 streams, 10 minutes) on loopback, sampling the server's resident
memory every few seconds. Passes when no request failed and the RSS is
flat: the mean of the last minute is within 5% (and 32 MiB) of the mean of
the first minute after warm-up.

  soak.py [--minutes 10] [--streams 16] [--json out.json]
"""

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import QUESTIONS, one_request  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def hang_up(host, port, question):
    """Starts a stream and closes the connection after the first chunks."""
    conn = http.client.HTTPConnection(host, port, timeout=600)
    conn.request("POST", "/v1/chat/completions", json.dumps({
        "messages": [{"role": "user", "content": question}], "stream": True,
        "max_tokens": 512, "logit_bias": {"0": -100, "2": -100}}),
        {"Content-Type": "application/json"})
    resp = conn.getresponse()
    ok = resp.status == 200 and all(resp.readline() for _ in range(4))
    conn.close()
    return {"ok": ok, "tokens": 0, "error": None if ok else f"HTTP {resp.status}"}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--streams", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default=str(ROOT / ".cache/testdata/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--json")
    a = ap.parse_args()

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = ROOT / "target/release/edgellama"
    log = open(ROOT / "target/soak-server.log", "w")
    proc = subprocess.Popen([str(exe), "serve", "-m", a.model, "--host", "127.0.0.1", "--port", str(port),
                             "--parallel", str(a.streams), "-c", str(a.ctx * a.streams), "-t", str(a.threads)],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        end = time.time() + a.minutes * 60
        stats = {"ok": 0, "failed": 0, "tokens": 0, "errors": []}
        lock = threading.Lock()

        def worker(w):
            i = w
            while time.time() < end:
                q = QUESTIONS[i % len(QUESTIONS)] + f" (variant {i})"
                i += a.streams
                # Every fourth request hangs up after its first token, as
                # impatient clients do.
                try:
                    if (i // a.streams) % 4 == 3:
                        r = hang_up("127.0.0.1", port, q)
                    else:
                        r = one_request("127.0.0.1", port, q, a.max_tokens, [0, 2])
                except OSError as e:
                    r = {"ok": False, "error": str(e)}
                with lock:
                    if r["ok"]:
                        stats["ok"] += 1
                        stats["tokens"] += r["tokens"]
                    else:
                        stats["failed"] += 1
                        stats["errors"].append(r["error"])

        t0 = time.time()
        threads = [threading.Thread(target=worker, args=(w,)) for w in range(a.streams)]
        for t in threads:
            t.start()
        samples = []
        while any(t.is_alive() for t in threads):
            samples.append((round(time.time() - t0, 1), rss_kib(proc.pid)))
            time.sleep(5)
        for t in threads:
            t.join()
        samples.append((round(time.time() - t0, 1), rss_kib(proc.pid)))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()

    def mean_between(t_lo, t_hi):
        xs = [r for t, r in samples if t_lo <= t <= t_hi]
        return sum(xs) / max(len(xs), 1)

    total = samples[-1][0]
    first = mean_between(60, 120)
    last = mean_between(total - 60, total)
    flat = last <= max(first * 1.05, first + 32 * 1024)
    result = {
        "minutes": a.minutes, "streams": a.streams, "max_tokens": a.max_tokens,
        "requests_ok": stats["ok"], "requests_failed": stats["failed"],
        "errors": stats["errors"][:5], "tokens": stats["tokens"],
        "tokens_per_s": round(stats["tokens"] / total, 1),
        "rss_mib_first_minute": round(first / 1024, 1), "rss_mib_last_minute": round(last / 1024, 1),
        "rss_mib_max": round(max(r for _, r in samples) / 1024, 1),
        "rss_flat": flat, "rss_samples_kib": samples,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "rss_samples_kib"}))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1))
    sys.exit(0 if flat and stats["failed"] == 0 else 1)


if __name__ == "__main__":
    main()
