"""Serving throughput: N concurrent streaming clients against a running `gguflm serve`.

    gguflm serve -m model.gguf --parallel 16 &
    python scripts/bench_serve.py --url http://127.0.0.1:8080 --clients 1,2,4,8,16 --tokens 128

For each N, N client threads each send --requests streamed completions one after another (greedy,
`ignore_eos`, exactly --tokens tokens, a prompt of their own) and time them. Prints, per N: the
aggregate tokens/s (all tokens over the round's wall time), the median per-request decode tokens/s
(tokens after the first over the time after the first), and time to first token p50/p99.
The clients are plain HTTP (http.client, one JSON parse per event), so that on a small machine the
benchmark measures the server and not a client library's per-chunk cost.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import threading
import time
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

from gguflm.files import write_text_atomic

WORDS = ("once", "upon", "a", "time", "the", "cat", "and", "dog", "in", "hello", "world", "it", "was", "sun")


@dataclass
class Round:
    clients: int
    requests: int
    tokens: int
    seconds: float
    aggregate_tok_s: float
    per_request_tok_s: float  # median over requests
    ttft_p50_s: float
    ttft_p99_s: float


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    api_key: str

    @classmethod
    def of(cls, url: str, api_key: str) -> "Target":
        parts = urlsplit(url)
        return cls(parts.hostname or "127.0.0.1", parts.port or 80, api_key)

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=3600)

    def headers(self) -> dict:
        return {"Content-Type": "application/json", "Authorization": f"Bearer {self.api_key}"}


def model_name(target: Target) -> str:
    conn = target.connect()
    conn.request("GET", "/v1/models", headers=target.headers())
    response = conn.getresponse()
    body = response.read()
    if response.status != 200:
        raise SystemExit(f"GET /v1/models answered {response.status}: {body[:300]!r}")
    return json.loads(body)["data"][0]["id"]


def one_request(target: Target, model: str, prompt: str, tokens: int) -> tuple[float, float, float, int]:
    """(start, first token, end, tokens) of one streamed completion."""
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": tokens, "temperature": 0, "stream": True,
                       "stream_options": {"include_usage": True}, "ignore_eos": True})
    start = time.perf_counter()
    first, n = None, 0
    conn = target.connect()
    try:
        conn.request("POST", "/v1/completions", body=body, headers=target.headers())
        response = conn.getresponse()
        if response.status != 200:
            raise RuntimeError(f"the server answered {response.status}: {response.read()[:300]!r}")
        for line in response:
            if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                continue
            event = json.loads(line[6:])
            if first is None and event["choices"] and event["choices"][0]["text"]:
                first = time.perf_counter()
            if event.get("usage"):
                n = event["usage"]["completion_tokens"]
    finally:
        conn.close()
    end = time.perf_counter()
    return start, first or end, end, n


def run_round(target: Target, model: str, clients: int, requests: int, tokens: int) -> Round:
    results, errors = [], []
    barrier = threading.Barrier(clients)

    def worker(c: int) -> None:
        barrier.wait()
        for r in range(requests):
            prompt = " ".join(WORDS[(c * 7 + r * 3 + i) % len(WORDS)] for i in range(8 + c % 5))
            try:
                results.append(one_request(target, model, prompt, tokens))
            except Exception as e:  # noqa: BLE001 - reported below, the round goes on
                errors.append(e)

    threads = [threading.Thread(target=worker, args=(c,)) for c in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    if errors:
        raise SystemExit(f"{len(errors)} request(s) failed at {clients} clients: {errors[0]}")
    total = sum(n for *_, n in results)
    per_request = [(n - 1) / (end - first) for _, first, end, n in results if n > 1 and end > first]
    ttft = [first - start for start, first, _, _ in results]
    return Round(clients, len(results), total, seconds, total / seconds,
                 statistics.median(per_request) if per_request else 0.0, percentile(ttft, 0.5), percentile(ttft, 0.99))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--api-key", default="none")
    ap.add_argument("--model", default=None, help="model name (default: the one /v1/models lists)")
    ap.add_argument("--clients", default="1,2,4,8,16", help="comma-separated concurrency levels")
    ap.add_argument("--tokens", type=int, default=128, help="tokens per request")
    ap.add_argument("--requests", type=int, default=2, help="requests per client per round")
    ap.add_argument("--json", default=None, help="also write the rounds as JSON here")
    args = ap.parse_args()
    target = Target.of(args.url, args.api_key)
    model = args.model or model_name(target)
    levels = [int(x) for x in args.clients.split(",") if x.strip()]
    one_request(target, model, "warm up", 4)  # the first request pays for lazy setup (graphs, kernels)
    rounds = []
    print("| clients | requests | aggregate tok/s | per-request tok/s (median) | TTFT p50 | TTFT p99 |")
    print("| --- | --- | --- | --- | --- | --- |")
    for n in levels:
        r = run_round(target, model, n, args.requests, args.tokens)
        rounds.append(r)
        print(f"| {n} | {r.requests} | {r.aggregate_tok_s:.1f} | {r.per_request_tok_s:.1f} | "
              f"{r.ttft_p50_s * 1e3:.0f} ms | {r.ttft_p99_s * 1e3:.0f} ms |", flush=True)
    if rounds and rounds[0].clients == 1:
        for r in rounds[1:]:
            print(f"{r.clients} clients: {r.aggregate_tok_s / rounds[0].aggregate_tok_s:.2f}x the aggregate of one")
    if args.json:
        write_text_atomic(args.json, json.dumps({"model": model, "url": args.url, "tokens": args.tokens,
                                                 "rounds": [asdict(r) for r in rounds]}, indent=2) + "\n",
                          "the benchmark results")


if __name__ == "__main__":
    main()
