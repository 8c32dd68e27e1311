"""An OPUS-MT-layout MarianMTModel trained by transformers on Multi30k (SentencePiece models, vocab.json,
swish, final_logits_bias, <pad> as decoder start): the imported model of bench/finetune_imported.sh and
bench/bench_imported.py, since the Hugging Face Hub (and Helsinki-NLP's real models) is out of reach here.

    .venv/bin/python bench/make_opus_mt.py OUT [--steps 2000] [--src de --tgt en]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from marian_fixture import build_opus_mt  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--src", default="de")
    p.add_argument("--tgt", default="en")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--d-ff", type=int, default=1024)
    p.add_argument("--vocab", type=int, default=8000, help="pieces per SentencePiece model (at most)")
    a = p.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    start = time.perf_counter()
    build_opus_mt(a.out, src=a.src, tgt=a.tgt, lines=29000, vocab=a.vocab, d_model=a.d_model, layers=a.layers,
                  heads=a.heads, d_ff=a.d_ff, train_steps=a.steps, batch=64, lr=1e-3, warmup=200)
    print(f"{a.out}: {a.steps} updates of 64 sentence pairs in {(time.perf_counter() - start) / 60:.1f} min")


if __name__ == "__main__":
    main()
