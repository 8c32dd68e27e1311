"""Peak memory of a training start: does a rank's memory grow with the corpus?

Prepares the synthetic corpus of bench_prepare.py (2,000,000 pairs by default) and Multi30k de->en,
then starts `transformer-cli train` on each in a child process (tiny preset, a few updates, one
validation on a sample) and reports its peak RSS (the kernel's high-water mark VmHWM) and its sampled peak heap
(RssAnon: memory that is not file-backed). Token ids are read from the memory-mapped Arrow files, so
the heap should barely differ between a 29,000-pair and a 2,000,000-pair corpus.

    python bench/bench_train_memory.py [--pairs 2000000] [--prepared DIR_OF_A_PREPARED_2M_CORPUS]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_prepare import SHARED, status_kib, synthetic_corpus  # noqa: E402

TRAIN = ["--preset", "tiny", "--max-steps", "20", "--eval-every", "20", "--eval-samples", "16",
         "--threads", "2", "--max-len", "512"]


def prepare(source: str, src: str, tgt: str, out: Path) -> None:
    code = ("from pathlib import Path; from data.prepare import PrepareOptions, prepare; "
            f"prepare(PrepareOptions({source!r}, {src!r}, {tgt!r}, vocab_size=8000), Path({str(out)!r}))")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def train_peak(data: Path, out: Path) -> tuple[float, float, float]:
    """(seconds, peak RSS GiB, peak heap GiB) of a short training run in a child process: the
    kernel's high-water mark VmHWM and the largest RssAnon, sampled every 0.1 s."""
    cmd = [sys.executable, "-m", "cli.main", "train", "--data", str(data), "--out", str(out), *TRAIN]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    heap = peak = 0
    while proc.poll() is None:
        heap = max(heap, status_kib(proc.pid, "RssAnon") * 1024)
        peak = max(peak, status_kib(proc.pid, "VmHWM") * 1024)
        time.sleep(0.1)
    if proc.returncode:
        raise SystemExit(f"train failed: {proc.stderr.read()}")
    return time.perf_counter() - t0, peak / 2**30, heap / 2**30


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=2_000_000)
    p.add_argument("--prepared", type=Path, help="a prepared synthetic corpus to reuse")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        prepare(str(SHARED), "de", "en", tmp / "m30k")
        big = args.prepared
        if big is None:
            synthetic_corpus(tmp / "train", args.pairs)
            big = tmp / "big"
            prepare(str(tmp / "train"), "xx", "yy", big)
        for name, data in (("Multi30k (29,000 pairs)", tmp / "m30k"), (f"synthetic ({args.pairs:,} pairs)", big)):
            seconds, peak, heap = train_peak(data, tmp / f"run-{data.name}")
            print(f"{name:32s} training start + 20 updates: {seconds:5.1f} s, peak RSS {peak:.2f} GiB, "
                  f"peak heap {heap:.2f} GiB")


if __name__ == "__main__":
    main()
