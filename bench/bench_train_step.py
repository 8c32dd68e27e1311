"""Training-step throughput: our Transformer vs one built on torch.nn.Transformer, same run.

Same sizes, batch, dtype, loss and optimizer; steps are interleaved (ours, baseline, ours, ...)
so machine noise hits both alike. Prints target tokens/s for each and the ratio ours/baseline.

    python bench/bench_train_step.py [--steps 20] [--threads 2]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
from torch import nn

from transformer import ModelConfig, Transformer
from transformer.embeddings import sinusoidal_table
from transformer.training import label_smoothed_nll


class TorchBaseline(nn.Module):
    """The same architecture assembled from torch.nn.Transformer (post-norm, ReLU, tied output)."""

    def __init__(self, c: ModelConfig) -> None:
        super().__init__()
        self.src_embed = nn.Embedding(c.src_vocab_size, c.d_model, padding_idx=c.pad_id)
        self.tgt_embed = nn.Embedding(c.tgt_vocab_size, c.d_model, padding_idx=c.pad_id)
        self.register_buffer("pe", sinusoidal_table(c.max_len, c.d_model))
        self.dropout = nn.Dropout(c.dropout)
        self.core = nn.Transformer(c.d_model, c.n_heads, c.n_encoder_layers, c.n_decoder_layers,
                                   c.d_ff, c.dropout, batch_first=True)
        self.generator = nn.Linear(c.d_model, c.tgt_vocab_size, bias=False)
        self.generator.weight = self.tgt_embed.weight
        self.scale = math.sqrt(c.d_model)
        self.pad_id = c.pad_id

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.src_embed(src) * self.scale + self.pe[: src.size(1)])
        y = self.dropout(self.tgt_embed(tgt) * self.scale + self.pe[: tgt.size(1)])
        causal = nn.Transformer.generate_square_subsequent_mask(tgt.size(1), dtype=torch.bool)
        src_pad = src == self.pad_id
        h = self.core(x, y, tgt_mask=causal, src_key_padding_mask=src_pad,
                      memory_key_padding_mask=src_pad, tgt_is_causal=True)
        return self.generator(h)


def make_batch(batch: int, length: int, vocab: int, pad_id: int, gen: torch.Generator):
    """Random ids with realistic right padding (lengths between 60% and 100% of `length`)."""
    src = torch.randint(4, vocab, (batch, length), generator=gen)
    tgt = torch.randint(4, vocab, (batch, length + 1), generator=gen)
    for i in range(batch):
        n = int(torch.randint(int(0.6 * length), length + 1, (1,), generator=gen))
        src[i, n:] = pad_id
        tgt[i, n + 1 :] = pad_id
    return src, tgt[:, :-1], tgt[:, 1:]


def train_step(model, optimizer, src, tgt_in, tgt_out, ours: bool, pad_id: int) -> None:
    logits = model(src, tgt_in)[0] if ours else model(src, tgt_in)
    loss, _ = label_smoothed_nll(logits, tgt_out, 0.1, pad_id)
    optimizer.zero_grad(set_to_none=True)
    (loss / (tgt_out != pad_id).sum()).backward()
    optimizer.step()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--length", type=int, default=24)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    c = ModelConfig(src_vocab_size=8000, tgt_vocab_size=8000, d_model=256, n_heads=8, d_ff=1024,
                    n_encoder_layers=3, n_decoder_layers=3, dropout=0.1, max_len=256)
    models = {"ours": Transformer(c).train(), "torch.nn.Transformer": TorchBaseline(c).train()}
    opts = {k: torch.optim.Adam(m.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-9)
            for k, m in models.items()}
    params = {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}
    gen = torch.Generator().manual_seed(0)
    batches = [make_batch(args.batch, args.length, c.tgt_vocab_size, c.pad_id, gen)
               for _ in range(args.steps + args.warmup)]
    times: dict[str, list[float]] = {k: [] for k in models}
    for i, (src, tgt_in, tgt_out) in enumerate(batches):
        for name, model in models.items():
            t0 = time.perf_counter()
            train_step(model, opts[name], src, tgt_in, tgt_out, name == "ours", c.pad_id)
            if i >= args.warmup:
                times[name].append(time.perf_counter() - t0)
    tokens = [int((b[2] != c.pad_id).sum()) for b in batches[args.warmup :]]
    mean_tokens = statistics.mean(tokens)
    print(f"torch {torch.__version__}, threads {args.threads}, float32, batch {args.batch} x "
          f"{args.length} tokens (~{mean_tokens:.0f} non-pad target tokens), {args.steps} timed steps")
    rate = {}
    for name, ts in times.items():
        rate[name] = mean_tokens / statistics.median(ts)
        print(f"{name:22s} params {params[name]:>10,d}  median step {statistics.median(ts) * 1e3:7.1f} ms"
              f"  target tokens/s {rate[name]:9.0f}")
    print(f"ratio ours / torch.nn.Transformer: {rate['ours'] / rate['torch.nn.Transformer']:.3f}")


if __name__ == "__main__":
    main()
