"""Vocabulary shortlists of several sizes against the full vocabulary (issue 25's lever; CTranslate2's
`vmap`, Marian's lexical shortlist; `translate --shortlist` with the table of `transformer-cli shortlist`):
at every decoding step only the target tokens likely for the batch's source words are scored, so the pre-softmax projection (256 x 8,000 on the Multi30k model: ~43% of the decoder's
linear work), the log-softmax and the top-k shrink to the shortlist's size.

The shortlist of a batch is the union, over the distinct source tokens of its sentences, of each
token's K target tokens with the highest Dice coefficient 2 c(s, t) / (c(s) + c(t)) over the training
pairs (c counts the pairs a token occurs in; counted once per pair), plus the F most frequent target
tokens and </s>, <s>, <pad>, <unk> (data/shortlist.py counts, transformer/shortlist.py decodes: the
library's own path, the table built here in memory for each setting), so log p is renormalised over
the shortlist, as in Marian and CTranslate2.

Prints, per setting and for the full vocabulary: seconds for the file (median of --repeats passes,
interleaved, in this process), the speed ratio, the mean shortlist size, BLEU / chrF on the reference,
and how many outputs equal the full vocabulary's.

    python bench/bench_shortlist.py --model work/quality/de-en-40m-ad01 [--k 20,50] [--frequent 100,500]
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "multi30k"


def read(path: Path, n: int | None = None) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f]
    return lines[:n] if n else lines


def table(candidates, k: int, frequent: int):
    """A Shortlist of each source token's first k candidates (of those counted) and the `frequent`
    most frequent target tokens with the special ones (what `transformer-cli shortlist` writes)."""
    from data.shortlist import always_allowed
    from transformer.shortlist import Shortlist

    offsets, targets = candidates.first(k)
    return Shortlist(*(torch.from_numpy(a.astype(np.int64)) for a in
                       (offsets, targets, always_allowed(candidates.target_counts, frequent))))


def search(translator, ids, shortlist, alpha: float, batch_tokens: int):
    """Beam 5 over the file; shortlist None = the full vocabulary. -> (hypotheses, mean shortlist size)."""
    from transformer_cli import SearchOptions

    translator.shortlist = shortlist
    hyps = [n[0] for n in translator.search(ids, SearchOptions(beam_size=5, length_penalty=alpha,
                                                              batch_tokens=batch_tokens))]
    if shortlist is None:
        return hyps, float(translator.model.config.tgt_vocab_size)
    sizes = [len(shortlist.ids(translator.tensor([ids[g] for g in group])))
             for group in translator.batches(ids, batch_tokens)]
    return hyps, statistics.mean(sizes)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--src", default="de")
    p.add_argument("--tgt", default="en")
    p.add_argument("--k", default="20,50", help="target tokens per source token (comma-separated settings)")
    p.add_argument("--frequent", default="100,500", help="most frequent target tokens always in (settings)")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-tokens", type=int, default=4000)
    p.add_argument("--sentences", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    from data.shortlist import dice_candidates
    from data.tokenizer import encode_batch
    from transformer_cli import load_run
    from transformer_cli.scoring import score

    torch.set_num_threads(args.threads)
    translator = load_run(args.model, precision=args.precision)
    c = translator.model.config
    start = time.perf_counter()
    train_src = encode_batch(translator.toks.src, read(DATA / f"train.{args.src}.gz"))
    train_tgt = encode_batch(translator.toks.tgt, read(DATA / f"train.{args.tgt}.gz"))
    k_max = max(int(k) for k in args.k.split(","))
    candidates = dice_candidates(zip(train_src, train_tgt), c.src_vocab_size, c.tgt_vocab_size, k_max)
    print(f"table from {len(train_src):,} training pairs in {time.perf_counter() - start:.1f} s")

    test = read(DATA / f"test_2016_flickr.{args.src}.gz", args.sentences)
    refs = read(DATA / f"test_2016_flickr.{args.tgt}.gz", args.sentences)
    ids = translator.encode(test).ids
    settings = [("full vocabulary", None)]
    for k in (int(v) for v in args.k.split(",")):
        for f in (int(v) for v in args.frequent.split(",")):
            settings.append((f"K {k}, F {f}", table(candidates, k, f)))
    alpha = 1.0  # translate's default length penalty
    search(translator, ids[:50], None, alpha, args.batch_tokens)  # warm-up
    times = {name: [] for name, _ in settings}
    results = {}
    for _ in range(args.repeats):
        for name, shortlist in settings:
            start = time.perf_counter()
            results[name] = search(translator, ids, shortlist, alpha, args.batch_tokens)
            times[name].append(time.perf_counter() - start)
    full = [h.tokens for h in results["full vocabulary"][0]]
    base = statistics.median(times["full vocabulary"])
    print(f"{args.model}, {len(ids)} sentences, beam 5, {args.precision}, {args.threads} threads, "
          f"median of {args.repeats}")
    print("| setting | seconds | speed vs full | mean shortlist | BLEU / chrF | outputs equal to full |")
    print("|---|---|---|---|---|---|")
    for name, _ in settings:
        hyps, size = results[name]
        texts = [translator.output(h, src)[0] for h, src in zip(hyps, ids)]
        s = score(texts, refs)
        same = sum(h.tokens == f for h, f in zip(hyps, full))
        seconds = statistics.median(times[name])
        print(f"| {name} | {seconds:.2f} | {base / seconds:.2f}x | {size:,.0f} | {s.bleu:.2f} / {s.chrf:.2f} | "
              f"{same}/{len(hyps)} |")


if __name__ == "__main__":
    main()
