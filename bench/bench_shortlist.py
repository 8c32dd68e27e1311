"""A vocabulary shortlist, measured before it is built (issue 25's lever; CTranslate2's `vmap`, Marian's
lexical shortlist): at every decoding step only the target tokens likely for the batch's source words
are scored, so the pre-softmax projection (256 x 8,000 on the Multi30k model: ~43% of the decoder's
linear work), the log-softmax and the top-k shrink to the shortlist's size.

The shortlist of a batch is the union, over the distinct source tokens of its sentences, of each
token's K target tokens with the highest Dice coefficient 2 c(s, t) / (c(s) + c(t)) over the training
pairs (c counts the pairs a token occurs in; counted once per pair), plus the F most frequent target
tokens and </s>, <s>, <pad>, <unk>. The searches are unchanged: the model is wrapped so that decode()
scores the shortlist's tokens and reads the next step's token back through it (Shortlisted below), so
log p is renormalised over the shortlist, as in Marian and CTranslate2.

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
from torch import nn

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "multi30k"


def read(path: Path, n: int | None = None) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f]
    return lines[:n] if n else lines


def dice_table(src_rows: list[list[int]], tgt_rows: list[list[int]], vocab: int, k: int
               ) -> tuple[list[np.ndarray], np.ndarray]:
    """For each source token, its k target tokens of highest Dice coefficient over the pairs; and
    c(t), the number of pairs each target token occurs in."""
    keys, c_src, c_tgt = [], np.zeros(vocab, np.int64), np.zeros(vocab, np.int64)
    for s, t in zip(src_rows, tgt_rows):
        s, t = np.unique(s), np.unique(t)
        c_src[s] += 1
        c_tgt[t] += 1
        keys.append((s[:, None] * vocab + t[None, :]).ravel())
    pairs, counts = np.unique(np.concatenate(keys), return_counts=True)
    s_of, t_of = pairs // vocab, pairs % vocab
    dice = 2.0 * counts / (c_src[s_of] + c_tgt[t_of])
    order = np.lexsort((-dice, s_of))  # by source token, then best first
    s_sorted, t_sorted = s_of[order], t_of[order]
    starts = np.searchsorted(s_sorted, np.arange(vocab + 1))
    return [t_sorted[starts[s]:min(starts[s] + k, starts[s + 1])] for s in range(vocab)], c_tgt


class Shortlisted(nn.Module):
    """The model with its output vocabulary cut to `ids` (sorted full-vocabulary ids): decode()
    returns logits over ids (position j = token ids[j]) and reads the tokens it is fed as positions."""

    def __init__(self, model, ids: torch.Tensor) -> None:
        super().__init__()
        from transformer.packed import PackedLinear

        self.model, self.ids, self.config = model, ids, model.config
        full = model.generator
        self.generator = PackedLinear(full.in_features, ids.numel(), bias=full.bias is not None)
        with torch.no_grad():
            self.generator.weight.copy_(full.weight[ids])
            if full.bias is not None:
                self.generator.bias.copy_(full.bias[ids])
        self.generator.to(full.weight.dtype)
        self.generator.packing = full.packing
        self.generator.requires_grad_(False)

    def position(self, token: int) -> int:
        return int(torch.searchsorted(self.ids, token))

    def encode(self, src, need_weights=False):
        return self.model.encode(src, need_weights)

    def decode(self, tgt, cache, need_weights=False, keep=None):
        m = self.model
        y = m.positions(m.tgt_embed(self.ids[tgt]), offset=cache.positions())
        h, self_records, cross_records = m.decoder(y, cache, need_weights)
        return self.generator(h), self_records, cross_records


def search(translator, ids, groups, table, frequent: np.ndarray | None, alpha: float):
    """Beam 5 over the groups; table None = the full vocabulary. -> (hypotheses, mean shortlist size)."""
    from data.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID
    from transformer.beam import beam_search
    from transformer.decoding import Hypothesis

    out, sizes = [None] * len(ids), []
    for group in groups:
        src = translator.tensor([ids[g] for g in group])
        if table is None:
            model, bos, eos, banned, back = translator.model, BOS_ID, EOS_ID, (PAD_ID, BOS_ID), None
        else:
            words = np.unique(np.concatenate([ids[g] for g in group]))
            short = np.unique(np.concatenate([frequent, [PAD_ID, BOS_ID, EOS_ID, UNK_ID], *[table[w] for w in words]]))
            back = torch.from_numpy(short)
            model = Shortlisted(translator.model, back)
            bos, eos = model.position(BOS_ID), model.position(EOS_ID)
            banned = (model.position(PAD_ID), bos)
            sizes.append(len(short))
        hyps = beam_search(model, src, bos, eos, beam_size=5, alpha=alpha, banned=banned)
        for g, nbest in zip(group, hyps):
            h = nbest[0]
            out[g] = h if back is None else Hypothesis(back[h.tokens].tolist(), h.token_logprobs, h.score)
    return out, (statistics.mean(sizes) if sizes else float(translator.model.config.tgt_vocab_size))


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

    from data.tokenizer import encode_batch
    from transformer_cli import load_run
    from transformer_cli.scoring import score

    torch.set_num_threads(args.threads)
    translator = load_run(args.model, precision=args.precision)
    vocab = translator.model.config.tgt_vocab_size
    start = time.perf_counter()
    train_src = encode_batch(translator.toks.src, read(DATA / f"train.{args.src}.gz"))
    train_tgt = encode_batch(translator.toks.tgt, read(DATA / f"train.{args.tgt}.gz"))
    k_max = max(int(k) for k in args.k.split(","))
    table, counts = dice_table(train_src, train_tgt, vocab, k_max)
    print(f"table from {len(train_src):,} training pairs in {time.perf_counter() - start:.1f} s")

    test = read(DATA / f"test_2016_flickr.{args.src}.gz", args.sentences)
    refs = read(DATA / f"test_2016_flickr.{args.tgt}.gz", args.sentences)
    ids = translator.encode(test).ids
    groups = translator.batches(ids, args.batch_tokens)
    settings = [("full vocabulary", None, None)]
    for k in (int(v) for v in args.k.split(",")):
        for f in (int(v) for v in args.frequent.split(",")):
            settings.append((f"K {k}, F {f}", [row[:k] for row in table], np.argsort(-counts)[:f]))
    alpha = 1.0  # translate's default length penalty
    search(translator, ids[:50], translator.batches(ids[:50], args.batch_tokens), None, None, alpha)  # warm-up
    times = {name: [] for name, _, _ in settings}
    results = {}
    for _ in range(args.repeats):
        for name, tab, freq in settings:
            start = time.perf_counter()
            results[name] = search(translator, ids, groups, tab, freq, alpha)
            times[name].append(time.perf_counter() - start)
    full = [h.tokens for h in results["full vocabulary"][0]]
    base = statistics.median(times["full vocabulary"])
    print(f"{args.model}, {len(ids)} sentences, beam 5, {args.precision}, {args.threads} threads, "
          f"median of {args.repeats}")
    print("| setting | seconds | speed vs full | mean shortlist | BLEU / chrF | outputs equal to full |")
    print("|---|---|---|---|---|---|")
    for name, _, _ in settings:
        hyps, size = results[name]
        texts = [translator.output(h, src)[0] for h, src in zip(hyps, ids)]
        s = score(texts, refs)
        same = sum(h.tokens == f for h, f in zip(hyps, full))
        seconds = statistics.median(times[name])
        print(f"| {name} | {seconds:.2f} | {base / seconds:.2f}x | {size:,.0f} | {s.bleu:.2f} / {s.chrf:.2f} | "
              f"{same}/{len(hyps)} |")


if __name__ == "__main__":
    main()
