"""Does a training run's memory stay flat? The heap of `transformer-cli train` over minutes, not 20 updates.

Runs `train --preset small --max-time SECONDS` (bf16 where the CPU has it, as the preset chooses) on a
prepared corpus in a child process, once per variant, and samples its heap (RssAnon: memory that is
not file-backed) every 5 s. Prints the heap at each fifth of the run, the growth over its second half
(MB per minute) and the training speed (target tokens/s, median of the log lines), so a variant's
cost in speed is seen beside its memory.

    python bench/bench_train_rss.py --data work/quality/m30k-de-en [--seconds 300] \\
        [--variant "name:ENV=VALUE,ENV=VALUE"]...

Variants set environment variables of the child (none: the commands' defaults); the word
`no-mallopt` among them instead runs train without its malloc settings (runtime.reuse_freed_memory:
freed memory goes back to the kernel). oneDNN keeps one compiled kernel per distinct shape
(ONEDNN_PRIMITIVE_CACHE_CAPACITY, 1,024 by default) and training batches come in many shapes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_prepare import status_kib  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# the CLI with reuse_freed_memory() turned into a no-op (the `no-mallopt` variant)
NO_MALLOPT = ("import sys, runpy, transformer_cli.runtime as r; r.reuse_freed_memory = lambda: False; "
              "sys.argv[0] = 'transformer-cli'; runpy.run_module('cli.main', run_name='__main__')")


def run(data: Path, seconds: int, env: dict[str, str], no_mallopt: bool, out: Path
        ) -> tuple[list[tuple[float, float]], float]:
    """[(seconds since start, heap MB)] sampled every 5 s, and the median target tokens/s."""
    entry = ["-c", NO_MALLOPT] if no_mallopt else ["-m", "cli.main"]
    cmd = [sys.executable, *entry, "train", "--data", str(data), "--out", str(out), "--preset", "small",
           "--max-time", str(seconds), "--threads", "2"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env}, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    t0, samples = time.monotonic(), []
    while proc.poll() is None:
        if mb := status_kib(proc.pid, "RssAnon") / 1024:  # 0 once it has exited (a zombie has no memory)
            samples.append((time.monotonic() - t0, mb))
        time.sleep(5)
    if proc.wait():
        raise SystemExit(f"train failed: {proc.stderr.read()[-2000:]}")
    speeds = [e["tokens_per_s"] for e in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
              if e["event"] == "train"]
    return samples, statistics.median(speeds)


def parse_variant(text: str) -> tuple[str, dict[str, str], bool]:
    """"name:ENV=VALUE,...[,no-mallopt]" -> (name, environment, without train's malloc settings)."""
    name, _, items = text.partition(":")
    words = [a for a in items.split(",") if a]
    return name, dict(a.split("=", 1) for a in words if a != "no-mallopt"), "no-mallopt" in words


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="a prepared corpus (prepare's output)")
    p.add_argument("--seconds", type=int, default=300)
    p.add_argument("--variant", action="append", default=[], help='"name:ENV=VALUE,..." (repeatable)')
    args = p.parse_args()
    variants = [parse_variant(v) for v in args.variant] or [("defaults", {}, False)]
    print(f"| variant | heap MB at 1/5 ... 5/5 of {args.seconds} s | growth, 2nd half (MB/min) | target tokens/s |")
    print("|---|---|---|---|")
    for name, env, no_mallopt in variants:
        with tempfile.TemporaryDirectory() as d:
            samples, speed = run(args.data.resolve(), args.seconds, env, no_mallopt, Path(d) / "run")
        end = samples[-1][0]
        marks = [min(samples, key=lambda s: abs(s[0] - end * k / 5))[1] for k in range(1, 6)]
        half = [s for s in samples if s[0] >= end / 2]
        growth = (half[-1][1] - half[0][1]) / max(half[-1][0] - half[0][0], 1) * 60
        print(f"| {name} | {', '.join(f'{m:.0f}' for m in marks)} | {growth:+.0f} | {speed:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
