"""Load on `transformer-cli serve` over loopback, against `translate` on the whole file in the same run.

    .venv/bin/python bench/bench_serve.py --model work/quality/de-en-20m \
        --source ../shared/data/multi30k/test_2016_flickr.de.gz [--clients 1,4,16,64] [--repeats 3] \
        [--precision fp32|bf16|int8]

For each repeat (interleaved): the baseline, a fresh process that loads the model and translates every
line in one call (what `translate` does after start-up), then a fresh `serve` process, and for each
client count C, C clients (threads, one keep-alive connection each) that send the lines one sentence
per request until none is left. Reported per level: sentences/s, the ratio to the baseline, p50 / p95 /
p99 latency, errors, and whether every answer equals the baseline's line. Then, once: RSS of the
server over --rss-requests requests (16 clients), and an overload run (--overload-clients clients of 4
sentences against --max-queue 32): how fast the 503s come, and a request right after.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINE = """
import sys, time, json
from pathlib import Path
from transformer_cli import load_run, SearchOptions
from transformer_cli.runtime import set_threads, reuse_freed_memory
from transformer_cli.stream import translate_files
set_threads(int(sys.argv[3])); reuse_freed_memory()
t = load_run(sys.argv[1], precision=sys.argv[5])
out = Path(sys.argv[2] + ".out")
start = time.perf_counter()
translate_files(t, [Path(sys.argv[2])], out, SearchOptions(beam_size=int(sys.argv[4])))
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "lines": out.read_text(encoding="utf-8").splitlines()}))
"""


def read_lines(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def baseline(model: str, lines: list[str], threads: int, beam: int, work: Path, precision: str = "fp32") -> dict:
    src = work / "bench-serve-source.txt"
    src.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    out = subprocess.run([sys.executable, "-c", BASELINE, model, str(src), str(threads), str(beam), precision],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout)


class Server:
    def __init__(self, model: str, threads: int, *flags: str) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--model", model, "--port", "0",
                                      "--threads", str(threads), *flags], cwd=ROOT, env=env,
                                     stderr=subprocess.PIPE, text=True)
        while not (line := self.proc.stderr.readline()).startswith("serving "):
            if not line and self.proc.poll() is not None:
                raise SystemExit(f"serve did not start: {self.proc.stderr.read()}")
        host_port = line.split(" at http://", 1)[1].split()[0]
        self.host, self.port = host_port.rsplit(":", 1)[0], int(host_port.rsplit(":", 1)[1])
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()  # keep the pipe drained

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


def load(server: Server, texts: list[list[str]], clients: int, beam: int) -> dict:
    """clients threads send texts[i] (a list of sentences) one request each until none is left."""
    lock, results, it = threading.Lock(), [None] * len(texts), iter(range(len(texts)))

    reconnects = []

    def client() -> None:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=600)
        while True:
            with lock:
                i = next(it, None)
            if i is None:
                break
            body = json.dumps({"text": texts[i], "beam_size": beam}).encode()
            t0 = time.perf_counter()
            for attempt in range(2):  # a kept-alive connection the server closed as we reused it: retry once
                try:
                    conn.request("POST", "/v1/translate", body, {"Content-Type": "application/json"})
                    r = conn.getresponse()
                    data = r.read()
                    break
                except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
                    if attempt:
                        raise
                    reconnects.append(i)
                    conn.close()
                    conn = http.client.HTTPConnection(server.host, server.port, timeout=600)
            results[i] = (r.status, time.perf_counter() - t0, data)
        conn.close()

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ok = [r for r in results if r[0] == 200]
    latencies = sorted(r[1] for r in results)
    q = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000  # noqa: E731
    refused = sorted(r[1] for r in results if r[0] == 503) or [float("nan")]
    return {"wall": wall, "sentences": sum(len(t) for t in texts), "errors": len(results) - len(ok),
            "p50": q(0.50), "p95": q(0.95), "p99": q(0.99), "reconnects": len(reconnects),
            "refused_p50": refused[len(refused) // 2] * 1000, "refused_p99": refused[int(0.99 * (len(refused) - 1))] * 1000,
            "statuses": sorted({r[0] for r in results}),
            "answers": [[x["text"] for x in json.loads(r[2])["translations"]] if r[0] == 200 else None
                        for r in results]}


def run_levels(args, lines: list[str]) -> None:
    levels = [int(c) for c in args.clients.split(",")]
    rows: dict[int, list[dict]] = {c: [] for c in levels}
    bases = []
    for rep in range(args.repeats):
        base = baseline(args.model, lines, args.threads, args.beam, Path(args.work), args.precision)
        bases.append(base["seconds"])
        server = Server(args.model, args.threads, "--max-queue", "100000", "--precision", args.precision)
        try:
            for c in levels:
                r = load(server, [[line] for line in lines], c, args.beam)
                r["identical"] = sum(a == [e] for a, e in zip(r.pop("answers"), base["lines"]))
                r["ratio"] = (r["sentences"] / r["wall"]) / (len(lines) / base["seconds"])
                rows[c].append(r)
                print(f"repeat {rep + 1} clients {c:3d}: {r['sentences'] / r['wall']:7.1f} sent/s "
                      f"(translate {len(lines) / base['seconds']:.1f}) ratio {r['ratio']:.2f} p50 {r['p50']:.0f} ms "
                      f"p95 {r['p95']:.0f} p99 {r['p99']:.0f} errors {r['errors']} reconnects {r['reconnects']} identical {r['identical']}/{len(lines)}",
                      flush=True)
        finally:
            server.stop()
    med = statistics.median
    print(f"\nbaseline translate (in-process, whole file, beam {args.beam}): median {med(bases):.2f} s = "
          f"{len(lines) / med(bases):.1f} sentences/s over {args.repeats} runs")
    print("| clients | sentences/s | ratio to translate | p50 ms | p95 ms | p99 ms | errors | identical |")
    print("|---|---|---|---|---|---|---|---|")
    for c, rs in rows.items():
        print(f"| {c} | {med(r['sentences'] / r['wall'] for r in rs):.1f} | {med(r['ratio'] for r in rs):.2f} | "
              f"{med(r['p50'] for r in rs):.0f} | {med(r['p95'] for r in rs):.0f} | {med(r['p99'] for r in rs):.0f} | "
              f"{sum(r['errors'] for r in rs)} | {min(r['identical'] for r in rs)}/{len(lines)} |")


def run_rss(args, lines: list[str]) -> None:
    server = Server(args.model, args.threads, "--max-queue", "100000")
    try:
        texts = [[lines[i % len(lines)]] for i in range(args.rss_requests)]
        seen, step = [], max(1, args.rss_requests // 5)
        for start in range(0, len(texts), step):
            r = load(server, texts[start:start + step], 16, args.rss_beam)
            seen.append((start + step, server.rss_mb(), r["errors"]))
        print(f"\nRSS over {args.rss_requests} requests (16 clients, beam {args.rss_beam}): " +
              ", ".join(f"{n}: {mb:.0f} MB" for n, mb, _ in seen) + f"; errors {sum(e for *_, e in seen)}")
    finally:
        server.stop()


def run_overload(args, lines: list[str]) -> None:
    server = Server(args.model, args.threads, "--max-queue", "32")
    try:
        texts = [lines[i * 4 % len(lines):][:4] for i in range(args.overload_clients * 4)]
        r = load(server, texts, args.overload_clients, args.beam)
        after = load(server, [[lines[0]]], 1, args.beam)
        print(f"\noverload: {args.overload_clients} clients x 4-sentence requests against --max-queue 32: statuses "
              f"{r['statuses']}, {r['errors']} of {len(texts)} refused, each in p50 {r['refused_p50']:.1f} ms / p99 "
              f"{r['refused_p99']:.1f} ms (all requests: p50 {r['p50']:.0f} ms, p99 {r['p99']:.0f} ms; "
              f"{r['reconnects']} reconnects); a request right after: status {after['statuses']} in "
              f"{after['p50']:.0f} ms")
    finally:
        server.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--source", default=str(ROOT.parent / "shared/data/multi30k/test_2016_flickr.de.gz"))
    p.add_argument("--clients", default="1,4,16,64")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--precision", default="fp32", help="fp32 | bf16 | int8, for the server and its translate baseline")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rss-requests", type=int, default=20000)
    p.add_argument("--rss-beam", type=int, default=1)
    p.add_argument("--overload-clients", type=int, default=128)
    p.add_argument("--parts", default="levels,rss,overload")
    p.add_argument("--work", default=str(ROOT / "work"))
    args = p.parse_args()
    lines = read_lines(Path(args.source))
    parts = args.parts.split(",")
    if "levels" in parts:
        run_levels(args, lines)
    if "rss" in parts:
        run_rss(args, lines)
    if "overload" in parts:
        run_overload(args, lines)


if __name__ == "__main__":
    main()
