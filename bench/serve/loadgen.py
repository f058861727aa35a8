#!/usr/bin/env python3
"""Streaming load generator for OpenAI-compatible servers (loopback only).

Sends chat completions with `stream: true` from C concurrent workers and
measures, per concurrency level: aggregate generated tokens per second
(all completion tokens over the level's wall time), and the p50/p99 time to
first token (request sent -> first content chunk). Every request generates
exactly --max-tokens tokens: end-of-generation tokens are banned through
`logit_bias` (and `ignore_eos` for llama-server), so both servers do the
same work. Only the standard library is used.

  loadgen.py --port 8080 --levels 1,4,16 --requests-per-worker 4 --json out.json
"""

import argparse
import http.client
import json
import statistics
import sys
import threading
import time

QUESTIONS = [
    "What is the capital of France?", "Name three primary colors.",
    "Write a haiku about the sea.", "How many legs does a spider have?",
    "Explain photosynthesis in one sentence.", "What is 12 times 12?",
    "Translate 'good morning' into Spanish.", "Give me a tip for learning to code.",
    "What is the tallest mountain on Earth?", "Why is the sky blue?",
    "Suggest a name for a cat.", "What does a bee make?", "List two planets.",
    "What is water made of?", "Who wrote Romeo and Juliet?",
    "Describe a sunset in five words.", "What is the boiling point of water?",
    "How do airplanes fly?", "Give me a recipe for pancakes.",
    "What is a prime number?", "Explain gravity to a child.",
    "What are the colors of the rainbow?", "Write a limerick about a dog.",
    "What is the speed of light?", "Name a famous painter.",
    "How many continents are there?", "What is the largest ocean?",
    "Describe a forest at night.", "What is machine learning?",
    "Why do leaves change color?", "How does a bicycle work?",
    "What is the moon made of?",
]


def percentile(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


MODEL = "bench"


def one_request(host, port, question, max_tokens, ban):
    body = json.dumps({
        "model": MODEL,
        "messages": [{"role": "user", "content": question}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "logit_bias": {str(t): -100 for t in ban},
        "ignore_eos": True,
    })
    conn = http.client.HTTPConnection(host, port, timeout=600)
    t0 = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        err = resp.read()[:300]
        conn.close()
        return {"ok": False, "error": f"HTTP {resp.status}: {err!r}"}
    ttft = None
    chunks = 0
    usage = None
    while True:
        line = resp.readline()
        if not line:
            break
        line = line.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            break
        ev = json.loads(data)
        if ev.get("usage"):
            usage = ev["usage"]
        for ch in ev.get("choices", []):
            if (ch.get("delta") or {}).get("content"):
                chunks += 1
                if ttft is None:
                    ttft = time.perf_counter() - t0
    t1 = time.perf_counter()
    conn.close()
    tokens = usage["completion_tokens"] if usage else chunks
    return {"ok": ttft is not None, "ttft": ttft, "tokens": tokens, "time": t1 - t0,
            "error": None if ttft is not None else "no content"}


def run_level(host, port, concurrency, per_worker, max_tokens, ban):
    results = []
    lock = threading.Lock()

    def worker(w):
        for r in range(per_worker):
            q = QUESTIONS[(w * per_worker + r) % len(QUESTIONS)]
            try:
                res = one_request(host, port, q, max_tokens, ban)
            except OSError as e:
                res = {"ok": False, "error": str(e)}
            with lock:
                results.append(res)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ok = [r for r in results if r["ok"]]
    ttfts = [r["ttft"] for r in ok]
    tokens = sum(r["tokens"] for r in ok)
    return {
        "concurrency": concurrency,
        "requests": len(results),
        "failed": len(results) - len(ok),
        "errors": sorted({r["error"] for r in results if not r["ok"]})[:5],
        "wall_s": round(wall, 3),
        "completion_tokens": tokens,
        "tokens_per_s": round(tokens / wall, 2),
        "ttft_p50_ms": round(1000 * percentile(ttfts, 50), 1),
        "ttft_p99_ms": round(1000 * percentile(ttfts, 99), 1),
        "ttft_mean_ms": round(1000 * statistics.mean(ttfts), 1) if ttfts else None,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--levels", default="1,4,16")
    ap.add_argument("--requests-per-worker", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--ban", default="0,2", help="token ids that must not be generated")
    ap.add_argument("--label", default="")
    ap.add_argument("--model", default="bench", help="the request's model (a server of several models picks by it)")
    ap.add_argument("--json", help="append the results to this JSON-lines file")
    a = ap.parse_args()
    global MODEL
    MODEL = a.model
    if a.host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("loadgen only targets loopback addresses")
    ban = [int(x) for x in a.ban.split(",") if x]
    for c in (int(x) for x in a.levels.split(",")):
        r = run_level(a.host, a.port, c, a.requests_per_worker, a.max_tokens, ban)
        r["label"] = a.label
        r["max_tokens"] = a.max_tokens
        print(json.dumps(r), flush=True)
        if a.json:
            with open(a.json, "a") as f:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
