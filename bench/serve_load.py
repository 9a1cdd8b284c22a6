"""Load test of `llada serve` on loopback: N concurrent clients for a bounded time (prints a summary).

    python bench/serve_load.py --model runs/quickstart/sft/model --clients 16 --seconds 30
    python bench/serve_load.py --url http://127.0.0.1:8000 --clients 32 --seconds 60   # a running server

Each client sends chat completions back to back (half of them streaming). Reports requests/s,
generated tokens/s (the answers' usage.completion_tokens: tokens kept up to the stop), p50 / p99
latency, the status codes seen and the batch sizes the server formed.
"""

from __future__ import annotations

import argparse
import collections
import json
import socket
import statistics
import threading
import time

import httpx


def start_server(model_dir: str, max_batch: int, max_queue: int):
    import uvicorn

    from llada.checkpoint import load
    from llada.serve.app import ServeConfig, create_app

    app = create_app(load(model_dir), ServeConfig(max_batch=max_batch, max_queue=max_queue))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", app, server


def ask(http: httpx.Client, url: str, body: dict, stream: bool) -> tuple[int | str, int]:
    """One request: its status and the completion tokens its usage reports."""
    if not stream:
        r = http.post(url + "/v1/chat/completions", json=body)
        return r.status_code, r.json().get("usage", {}).get("completion_tokens", 0) if r.status_code == 200 else 0
    status, tokens = 0, 0
    streamed = {**body, "stream": True, "stream_options": {"include_usage": True}}
    with http.stream("POST", url + "/v1/chat/completions", json=streamed) as r:
        status = r.status_code
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            msg = json.loads(line[6:])
            if "error" in msg:
                status = msg["error"]["code"]
            tokens = (msg.get("usage") or {}).get("completion_tokens", tokens)
    return status, tokens


def client(url: str, stop_at: float, stream: bool, body: dict, out: list, codes: collections.Counter,
           lock: threading.Lock) -> None:
    with httpx.Client(timeout=300) as http:
        while time.monotonic() < stop_at:
            t = time.perf_counter()
            try:
                status, tokens = ask(http, url, body, stream)
            except httpx.HTTPError as e:
                status, tokens = type(e).__name__, 0
            with lock:
                codes[status] += 1
                if status == 200:
                    out.append((time.perf_counter() - t, tokens))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="runs/quickstart/sft/model")
    p.add_argument("--url", default=None)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--max-queue", type=int, default=64)
    args = p.parse_args()
    app = None
    url = args.url
    if url is None:
        url, app, _ = start_server(args.model, args.max_batch, args.max_queue)
    body = {"messages": [{"role": "user", "content": "Where does Vaquar Gae live?"}], "max_tokens": args.max_tokens,
            "steps": args.steps, "block_length": min(16, args.max_tokens)}
    done: list[tuple[float, int]] = []  # (latency, completion tokens) of each answered request
    codes: collections.Counter = collections.Counter()
    lock = threading.Lock()
    stop_at = time.monotonic() + args.seconds
    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(url, stop_at, i % 2 == 1, body, done, codes, lock))
               for i in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    ok = codes.get(200, 0)
    lat = sorted(t for t, _ in done)
    generated = sum(n for _, n in done)
    p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else float("nan")
    print(f"clients {args.clients}, {args.seconds:g} s, max_tokens {args.max_tokens}, steps {args.steps}")
    print(f"requests ok {ok}, {ok / wall:.2f} req/s, {generated / wall:.1f} generated tokens/s "
          f"(answer tokens up to the stop; {ok * args.max_tokens / wall:.1f} response slots/s)")
    if lat:
        print(f"latency p50 {statistics.median(lat):.2f} s, p99 {p99:.2f} s, max {lat[-1]:.2f} s")
    print(f"status codes: {dict(codes)}; errors (non-200): {sum(v for k, v in codes.items() if k != 200)}")
    if app is not None:
        sizes = app.state.batch_sizes
        print(f"batches run: {len(sizes)}, mean size {statistics.mean(sizes):.1f}, max {max(sizes)}" if sizes else "")


if __name__ == "__main__":
    main()
