"""prepare throughput and peak memory.

1. Full Multi30k train (+val/test) de->en: pairs/s of `prepare`, next to the floor of merely reading
   and decoding the same gzipped files in the same run (ratio = prepare time / read time).
2. Peak memory (max RSS of the process and its children) of `prepare` on a synthetic corpus of
   --pairs pairs written by this script; the target is < 2 GiB (streaming, no Python lists).

    python bench/bench_prepare.py [--pairs 2000000] [--skip-memory]
"""

from __future__ import annotations

import argparse
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "multi30k"
LIMIT = 2 * 1024**3


def read_floor(files: list[Path]) -> float:
    from data.textfiles import read_lines

    t0 = time.perf_counter()
    for f in files:
        for _ in read_lines(f):
            pass
    return time.perf_counter() - t0


def throughput(tmp: Path) -> None:
    from data.prepare import PrepareOptions, prepare

    files = sorted(SHARED.glob("*.de.gz")) + sorted(SHARED.glob("*.en.gz"))
    floor = read_floor(files)
    t0 = time.perf_counter()
    manifest = prepare(PrepareOptions(str(SHARED), "de", "en", vocab_size=8000), tmp / "m30k")
    elapsed = time.perf_counter() - t0
    pairs = sum(s["read"] for s in manifest["splits"].values())
    print(f"Multi30k de->en, {pairs} pairs: prepare {elapsed:.1f} s = {pairs / elapsed:,.0f} pairs/s; "
          f"reading the files alone {floor:.2f} s; ratio prepare/read {elapsed / floor:.1f}")


def synthetic_corpus(prefix: Path, pairs: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    syllables = ["ka", "to", "mi", "ra", "ne", "su", "lo", "pe", "di", "gu", "ba", "ze", "chi", "ho"]
    words = sorted({"".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(20000)})
    with open(f"{prefix}.xx", "w") as fs, open(f"{prefix}.yy", "w") as ft:
        for _ in range(pairs):
            n = rng.randint(4, 25)
            fs.write(" ".join(rng.choices(words, k=n)) + "\n")
            ft.write(" ".join(rng.choices(words, k=max(1, n + rng.randint(-3, 3)))) + "\n")


def memory(tmp: Path, pairs: int) -> None:
    prefix = tmp / "train"
    t0 = time.perf_counter()
    synthetic_corpus(prefix, pairs)
    size = Path(f"{prefix}.xx").stat().st_size + Path(f"{prefix}.yy").stat().st_size
    print(f"synthetic corpus: {pairs:,} pairs, {size / 1e6:.0f} MB, written in {time.perf_counter() - t0:.0f} s")
    code = ("import sys; from pathlib import Path; from data.prepare import PrepareOptions, prepare; "
            f"prepare(PrepareOptions({str(prefix)!r}, 'xx', 'yy', vocab_size=8000), Path({str(tmp / 'out')!r}))")
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code])
    peak_anon = 0
    while proc.poll() is None:  # sample the heap (RssAnon) besides the kernel's max RSS
        peak_anon = max(peak_anon, status_kib(proc.pid, "RssAnon") * 1024)
        time.sleep(0.2)
    if proc.returncode:
        raise SystemExit(f"prepare failed with exit code {proc.returncode}")
    elapsed = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print(f"prepare on {pairs:,} synthetic pairs: {elapsed:.0f} s ({pairs / elapsed:,.0f} pairs/s), "
          f"peak RSS {peak / 1024**3:.2f} GiB (of which heap, sampled: {peak_anon / 1024**3:.2f} GiB; "
          f"the rest is memory-mapped Arrow pages); ratio peak RSS / 2 GiB limit {peak / LIMIT:.2f} "
          f"({'PASS' if peak < LIMIT else 'FAIL'})")


def status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=2_000_000)
    p.add_argument("--skip-memory", action="store_true")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        throughput(Path(d))
        if not args.skip_memory:
            memory(Path(d), args.pairs)


if __name__ == "__main__":
    main()
