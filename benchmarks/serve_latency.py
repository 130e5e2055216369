"""Latency and throughput of `ilm-serve`, with the model called directly as
the reference, and the terminal chat's time to its first answer.

    python benchmarks/serve_latency.py --preset runs/quickstart/preset

1. Starts `python -m ilm_keras.serve PRESET` on a free loopback port (its
   own process, as deployed) and, in this process, loads the same preset
   into a `ChatModel` (the reference: the same calls without HTTP).
2. For `POST /recommend` (a history of 3 random items, k=10) and
   `POST /chat` ("recommend something after item_a, item_b and item_c", a
   new conversation per request), at 1, 4 and 16 concurrent clients
   (threads, one keep-alive connection each): requests/s and p50/p95
   latency through the server, then the same requests through the
   `ChatModel` / `Conversation` directly from as many threads. Server
   overhead = server p50 / direct p50 (and direct req/s / server req/s).
3. Runs `python -m ilm_keras.chat PRESET --timing` with two piped messages:
   the load + warm-up time it prints, the first answer's own time, and
   the wall time from process start to the first answer.

Writes `benchmarks/results/serve_latency.md`. Everything shares this
machine's CPU cores (the server process, the reference model and the client
threads), so the ratio is the honest part of the numbers, not their level.
"""

from ilm_keras.utils.quiet import quiet_backend_logs

quiet_backend_logs()

import argparse  # noqa: E402
import concurrent.futures  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import REPO  # noqa: E402
from report import report_header  # noqa: E402
from report import write_report  # noqa: E402

CONCURRENCY = (1, 4, 16)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(preset, port, log_path):
    log = open(log_path, "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "ilm_keras.serve", preset, "--port", str(port),
         "--max-k", "20", "--max-conversations", "5000"],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"The server exited; see {log_path}.")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return process
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError("The server did not answer /health within 600 s.")


def percentiles(seconds):
    ms = np.asarray(seconds) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def run_clients(calls, clients):
    """Runs `calls` (callables taking a client index) from `clients`
    threads; returns (requests/s, [latency s])."""
    queue = list(range(len(calls)))
    lock = threading.Lock()
    latencies = []

    def worker(index):
        while True:
            with lock:
                if not queue:
                    return
                n = queue.pop(0)
            start = time.perf_counter()
            calls[n](index)
            elapsed = time.perf_counter() - start
            with lock:
                latencies.append(elapsed)

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(worker, i) for i in range(clients)]:
            f.result()
    return len(calls) / (time.perf_counter() - start), latencies


class Client:
    """One keep-alive connection per client thread."""

    def __init__(self, port, clients):
        self.connections = [http.client.HTTPConnection("127.0.0.1", port,
                                                       timeout=120)
                            for _ in range(clients)]

    def post(self, index, path, body):
        conn = self.connections[index]
        conn.request("POST", path, json.dumps(body),
                     {"Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"{path} -> {response.status}: {data[:200]}")
        return json.loads(data)


def first_answer(preset, items):
    """`ilm-chat --timing` with two piped messages: its timings."""
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "ilm_keras.chat", preset, "--timing", "--k", "5"],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    out = []
    process.stdin.write(f"recommend something after item_{items[0]} and "
                        f"item_{items[1]}\nwhat is the first one about?\n/quit\n")
    process.stdin.flush()
    first_wall = None
    for line in process.stdout:
        out.append(line)
        if first_wall is None and line.startswith("ilm> "):
            first_wall = time.perf_counter() - start
    process.wait(timeout=600)
    stderr = process.stderr.read()
    loaded = re.search(r"in ([0-9.]+)s, warmed up in ([0-9.]+)s", stderr)
    timings = [float(t) for t in re.findall(r"^  \(([0-9.]+)s\)$", "".join(out), re.M)]
    return {"load_s": float(loaded.group(1)) if loaded else None,
            "warm_up_s": float(loaded.group(2)) if loaded else None,
            "answers_s": timings, "first_answer_wall_s": first_wall,
            "transcript": "".join(out)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="runs/quickstart/preset")
    parser.add_argument("--preset-name", default=None,
                        help="how the report names the preset (default: its path)")
    parser.add_argument("--preset-note", default="",
                        help="how the preset was made, for the report")
    parser.add_argument("--requests", type=int, default=64,
                        help="requests per endpoint and concurrency")
    parser.add_argument("--output",
                        default=os.path.join(REPO, "benchmarks", "results",
                                             "serve_latency.md"))
    args = parser.parse_args()
    load_before = os.getloadavg()

    from ilm_keras.chat.conversation import Conversation
    from ilm_keras.chat.options import add_model_options
    from ilm_keras.chat.options import load_chat_model

    port = free_port()
    log_path = os.path.join("/tmp", f"ilm_serve_bench_{port}.log")
    server = start_server(args.preset, port, log_path)
    try:
        model_args = argparse.ArgumentParser()
        add_model_options(model_args)
        chat_model, load_seconds = load_chat_model(
            model_args.parse_args([args.preset, "--max-k", "20"]))
        rng = np.random.default_rng(0)
        ids = chat_model.catalogue.item_ids
        histories = [list(rng.choice(ids, size=3, replace=False))
                     for _ in range(args.requests)]
        messages = ["recommend something after " + ", ".join(
            f"item_{i}" for i in h[:2]) + f" and item_{h[2]}" for h in histories]

        rows = []
        for clients in CONCURRENCY:
            client = Client(port, clients)
            for endpoint in ("recommend", "chat"):
                if endpoint == "recommend":
                    served = [lambda c, h=h: client.post(
                        c, "/recommend", {"history": h, "k": 10}) for h in histories]
                    direct = [lambda c, h=h: chat_model.recommend(h, k=10)
                              for h in histories]
                else:
                    served = [lambda c, m=m: client.post(c, "/chat", {"message": m})
                              for m in messages]
                    direct = [lambda c, m=m: Conversation(chat_model).respond(m)
                              for m in messages]
                run_clients(served[:8], clients)  # connections, caches
                server_rps, server_lat = run_clients(served, clients)
                direct_rps, direct_lat = run_clients(direct, clients)
                s50, s95 = percentiles(server_lat)
                d50, d95 = percentiles(direct_lat)
                rows.append((endpoint, clients, server_rps, s50, s95, direct_rps,
                             d50, d95))
                print(rows[-1], flush=True)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    with open(log_path) as f:
        server_log = f.read().strip()
    chat = first_answer(args.preset, chat_model.catalogue.item_ids[:2])
    load_after = os.getloadavg()

    name = args.preset_name or args.preset
    lines = report_header("ilm-serve latency and throughput")
    lines += [
        f"Preset: `{name}` ({len(chat_model.catalogue)} items, "
        f"{len(chat_model.catalogue.user_ids)} users, sequence_length "
        f"{chat_model.sequence_length}){args.preset_note}. Load average (1, 5, 15 min) before: "
        f"{', '.join(f'{x:.2f}' for x in load_before)}; after: "
        f"{', '.join(f'{x:.2f}' for x in load_after)} (other jobs shared the "
        "machine).",
        "",
        f"{args.requests} requests per row (after 8 warm-up requests), k=10. "
        "`/recommend`: a history of 3 random items; `/chat`: \"recommend "
        "something after item_a, item_b and item_c\" in a new conversation. "
        "Server: `python -m ilm_keras.serve` in its own process under uvicorn, "
        "client threads with one keep-alive connection each. Direct: the same "
        "calls on a `ChatModel` loaded in the benchmark process, from as many "
        "threads (the model lock serialises both). Overhead: server p50 / "
        "direct p50.",
        "",
        "| endpoint | clients | server req/s | server p50 ms | server p95 ms "
        "| direct req/s | direct p50 ms | direct p95 ms | overhead (p50) "
        "| req/s direct / server |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for endpoint, clients, srps, s50, s95, drps, d50, d95 in rows:
        lines.append(
            f"| /{endpoint} | {clients} | {srps:.1f} | {s50:.1f} | {s95:.1f} | "
            f"{drps:.1f} | {d50:.1f} | {d95:.1f} | {s50 / d50:.2f}x | "
            f"{drps / srps:.2f}x |")
    lines += [
        "",
        "## Terminal chat: time to the first answer",
        "",
        f"`python -m ilm_keras.chat {args.preset} --timing --k 5` ({name}), "
        f"two piped messages. Load (importing Keras and its backend, reading the preset) "
        f"{chat['load_s']}s, warm-up (compiling the recommendation and "
        f"generation programs) {chat['warm_up_s']}s; then the answers took "
        + ", ".join(f"{t:.3f}s" for t in chat["answers_s"])
        + f". From process start (imports included) to the first answer: "
        f"{chat['first_answer_wall_s']:.1f}s.",
        "",
        "```",
        chat["transcript"].strip(),
        "```",
        "",
        "Server start-up (its own log): `" + server_log.splitlines()[-1]
        + "`" if server_log else "",
        f"Reference model in this process: {load_seconds}.",
    ]
    write_report(lines, args.output)


if __name__ == "__main__":
    main()
