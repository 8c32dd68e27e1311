"""Dynamic int8 linear layers (transformer/packed.py, oneDNN's quantised linear) against float32, on
the 1,000 test2016 sentences: which layers to quantise, what it costs in BLEU, what it buys in time.

Every configuration is a fresh process (one pass, start-up and a warm-up batch not timed), the
configurations interleaved, --repeats passes each; prints the median seconds, the ratio to float32,
BLEU, and how many outputs are identical to float32's.

    python bench/bench_int8.py --model work/quality/de-en-20m [--beam 5] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEST_DE = REPO.parent / "shared" / "data" / "multi30k" / "test_2016_flickr.de.gz"
TEST_EN = TEST_DE.with_name("test_2016_flickr.en.gz")

CONFIGS = {  # which layers compute in int8: (name, in_features, out_features) -> bool
    "fp32": lambda n, i, o: False,
    "int8 output projection": lambda n, i, o: n == "generator",
    "int8 output + feed-forward w_1": lambda n, i, o: n == "generator" or n.endswith("feed_forward.w_1"),
    "int8 every linear": lambda n, i, o: True,
}


def one_pass(model: Path, config: str, beam: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    from transformer.packed import pack_linears
    from transformer_cli import SearchOptions, load_run
    from transformer_cli.runtime import reuse_freed_memory

    reuse_freed_memory()
    t = load_run(model)
    choose = CONFIGS[config]
    pack_linears(t.model, lambda n, m: choose(n, m.in_features, m.out_features))
    lines = gzip.open(TEST_DE, "rt", encoding="utf-8").read().splitlines()
    options = SearchOptions(beam_size=beam)
    t.translate(lines[:64], options)  # warm-up
    start = time.perf_counter()
    out = [r.text for r in t.translate(lines, options)]
    return {"seconds": time.perf_counter() - start, "out": out}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--config", help=argparse.SUPPRESS)  # child process
    a = p.parse_args()
    if a.config:
        print(json.dumps(one_pass(a.model, a.config, a.beam, a.threads)))
        return
    from transformer_cli.scoring import score

    refs = gzip.open(TEST_EN, "rt", encoding="utf-8").read().splitlines()
    times: dict[str, list[float]] = {c: [] for c in CONFIGS}
    outputs: dict[str, list[str]] = {}
    for _ in range(a.repeats):
        for c in CONFIGS:
            cmd = [sys.executable, __file__, "--model", str(a.model), "--beam", str(a.beam), "--threads",
                   str(a.threads), "--config", c]
            r = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
            times[c].append(r["seconds"])
            outputs[c] = r["out"]
    base = statistics.median(times["fp32"])
    print(f"{a.model}, beam {a.beam}, {len(refs)} sentences, {a.threads} threads, median of {a.repeats} "
          f"interleaved passes (fresh process each)")
    print("| linear layers | seconds | speed vs fp32 | BLEU | identical to fp32 | passes (s) |")
    print("|---|---|---|---|---|---|")
    for c in CONFIGS:
        m = statistics.median(times[c])
        same = sum(x == y for x, y in zip(outputs[c], outputs["fp32"]))
        print(f"| {c} | {m:.2f} | {base / m:.2f}x | {score(outputs[c], refs).bleu:.2f} | {same}/{len(refs)} | "
              f"{', '.join(f'{t:.2f}' for t in times[c])} |")


if __name__ == "__main__":
    main()
