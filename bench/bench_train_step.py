"""Training-step throughput: our Transformer vs one built on torch.nn.Transformer, same run.

Same sizes, batch, loss, clipping and learning rate; ours runs the library's own train_step (what
`transformer-cli train` runs, with its fused Adam), the baseline the plain recipe (full logits,
torch.optim.Adam). Steps are interleaved (ours, baseline, ours, ...) so machine noise hits both alike.
For float32 and bfloat16 autocast it prints target tokens/s, the ratios the training-speed issue asks
for, and model FLOPs utilisation: FLOPs of a step (counted by torch's FlopCounterMode) per second over
the measured peak of a large matrix product in the same dtype, on the same machine, in the same run.

    python bench/bench_train_step.py [--steps 20] [--threads 2] [--precision fp32,bf16]
    python bench/bench_train_step.py --device cuda --shape base --precision bf16   (bench/gpu.sh)
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
from torch import nn

from torch.utils.flop_counter import FlopCounterMode

from data.batching import Batch
from transformer import ModelConfig, Transformer
from transformer.embeddings import sinusoidal_table
from transformer.training import adam, autocast, label_smoothed_nll, train_step
from transformer_cli.runtime import reuse_freed_memory


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


def baseline_step(model: TorchBaseline, optimizer, b: Batch, precision: str, pad_id: int) -> None:
    """The plain recipe: logits at every position, the same label-smoothed loss, clipping, Adam."""
    model.train()
    with autocast(b.src.device, precision):
        logits = model(b.src, b.tgt_in)
    loss, _ = label_smoothed_nll(logits, b.tgt_out, 0.1, pad_id)
    optimizer.zero_grad(set_to_none=True)
    (loss / b.n_tokens).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()


def run_step(name: str, model, optimizer, b: Batch, precision: str, pad_id: int) -> None:
    if name == "ours":  # exactly what `transformer-cli train` runs per update
        train_step(model, optimizer, [b], 1e-4, 0.1, 1.0, precision)
    else:
        baseline_step(model, optimizer, b, precision, pad_id)


SHAPES = {  # name: (ModelConfig fields, vocabulary, batch rows, tokens per row)
    "small": (dict(d_model=256, n_heads=8, d_ff=1024, n_encoder_layers=3, n_decoder_layers=3), 8000, 64, 24),
    "base": (dict(d_model=512, n_heads=8, d_ff=2048, n_encoder_layers=6, n_decoder_layers=6), 32000, 256, 96),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(dtype: torch.dtype, device: torch.device, sizes=(1024, 2048, 4096, 8192), repeats: int = 5) -> float:
    """FLOP/s of the fastest n x n x n matrix product in `dtype` (median of repeats per size): the
    machine's practical peak, which depends on the size (float32 here: 4096 ran faster than 2048)."""
    best = 0.0
    for n in sizes:
        if device.type == "cpu" and n > 4096:
            continue  # minutes on two cores, and no faster than 4096
        a, b = torch.randn(n, n, device=device).to(dtype), torch.randn(n, n, device=device).to(dtype)
        a @ b
        times = []
        for _ in range(repeats):
            sync(device)
            t0 = time.perf_counter()
            a @ b
            sync(device)
            times.append(time.perf_counter() - t0)
        best = max(best, 2 * n**3 / statistics.median(times))
    return best


def step_flops(name: str, model, optimizer, b: Batch, pad_id: int) -> int:
    """FLOPs of one training step (forward, backward), as torch's FlopCounterMode counts them."""
    counter = FlopCounterMode(display=False)
    with counter:
        run_step(name, model, optimizer, b, "fp32", pad_id)
    return counter.get_total_flops()


def time_steps(models, opts, batches, precision: str, warmup: int, pad_id: int) -> dict[str, float]:
    """Median seconds per step of each model, steps interleaved."""
    times: dict[str, list[float]] = {k: [] for k in models}
    for i, b in enumerate(batches):
        for name, model in models.items():
            sync(b.src.device)
            t0 = time.perf_counter()
            run_step(name, model, opts[name], b, precision, pad_id)
            sync(b.src.device)
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--shape", default="small", choices=sorted(SHAPES), help="small (the issue's) | base (the paper's)")
    p.add_argument("--batch", type=int, help="rows per batch (default: the shape's)")
    p.add_argument("--length", type=int, help="tokens per row (default: the shape's)")
    p.add_argument("--precision", default="fp32,bf16")
    p.add_argument("--system-malloc", action="store_true", help="leave glibc's malloc as it is")
    args = p.parse_args()
    allocator = "glibc defaults" if args.system_malloc else f"reuse_freed_memory() -> {reuse_freed_memory()}"
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    fields, vocab, rows, length = SHAPES[args.shape]
    args.batch, args.length = args.batch or rows, args.length or length
    c = ModelConfig(src_vocab_size=vocab, tgt_vocab_size=vocab, dropout=0.1, max_len=max(256, args.length + 2),
                    **fields)
    models = {"ours": Transformer(c).to(device), "torch.nn.Transformer": TorchBaseline(c).to(device)}
    opts = {"ours": adam(models["ours"].parameters(), (0.9, 0.98), 1e-9),
            "torch.nn.Transformer": torch.optim.Adam(models["torch.nn.Transformer"].parameters(), lr=1e-4,
                                                     betas=(0.9, 0.98), eps=1e-9)}
    gen = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(args.steps + args.warmup):
        src, tgt_in, tgt_out = make_batch(args.batch, args.length, c.tgt_vocab_size, c.pad_id, gen)
        batches.append(Batch(src, tgt_in, tgt_out, torch.arange(args.batch)).to(device))
    tokens = statistics.mean(b.n_tokens for b in batches[args.warmup:])
    flops = {k: step_flops(k, m, opts[k], batches[0], c.pad_id) for k, m in models.items()}
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{args.threads} threads"
    print(f"torch {torch.__version__}, {where}, shape {args.shape}, batch {args.batch} x {args.length} tokens "
          f"(~{tokens:.0f} non-pad target tokens), {args.steps} timed steps, malloc: {allocator}")
    rates: dict[tuple[str, str], float] = {}
    for precision in args.precision.split(","):
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        peak = matmul_peak(dtype, device)
        step = time_steps(models, opts, batches, precision, args.warmup, c.pad_id)
        print(f"{precision}: peak matrix product {peak / 1e9:.1f} GFLOP/s")
        for name, seconds in step.items():
            rates[name, precision] = tokens / seconds
            print(f"  {name:22s} median step {seconds * 1e3:7.1f} ms  target tokens/s {tokens / seconds:7.0f}"
                  f"  {flops[name] / 1e9:6.1f} GFLOP/step  MFU {flops[name] / seconds / peak:5.1%}")
    print("ratios:")
    for precision in args.precision.split(","):
        print(f"  {precision} ours / torch.nn.Transformer: "
              f"{rates['ours', precision] / rates['torch.nn.Transformer', precision]:.2f}"
              + ("  (target >= 1.3)" if precision == "fp32" else "  (target > 1)"))
    if ("ours", "bf16") in rates and ("ours", "fp32") in rates:
        print(f"  ours bf16 / ours fp32: {rates['ours', 'bf16'] / rates['ours', 'fp32']:.2f}  (target >= 1.5)")


if __name__ == "__main__":
    main()
