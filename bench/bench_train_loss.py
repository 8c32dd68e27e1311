"""The training loss with its gradient written out (transformer/fused_loss.py) against autograd
through the same formulas, in the same run, interleaved, medians.

    python bench/bench_train_loss.py [--steps 15] [--threads 2] [--precision bf16]

Two levels: the loss alone on the logits `train` gets from the `small` shape's output projection
((rows, 8,000), bf16 under --precision auto), forward + backward, with and without R-Drop; and whole
train_steps of the `small` shape on ~4,000-target-token batches (the preset's --max-tokens 4096),
plain and R-Drop 5 (the batch twice), with batch_loss as committed against batch_loss with autograd's
formulas (the loss before fused_loss.py).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import transformer.training as training  # noqa: E402
from bench.bench_train_step import SHAPES, make_batch  # noqa: E402
from data.batching import Batch  # noqa: E402
from transformer import ModelConfig, Transformer  # noqa: E402
from transformer.fused_loss import log_softmax32, smoothed_ce_and_kl  # noqa: E402
from transformer.training import adam, train_step  # noqa: E402
from transformer_cli.runtime import bound_kernel_cache, reuse_freed_memory  # noqa: E402


def autograd_loss(logits: torch.Tensor, target: torch.Tensor, epsilon: float, alpha: float = 0.0):
    """The same (loss, nll) through autograd: label_smoothed_nll's and symmetric_kl's formulas on one
    log-softmax, as batch_loss computed them before fused_loss.py."""
    logp = log_softmax32(logits)
    loss, nll = training._smoothed_nll(logp, target, epsilon, pad_id=-1)
    return (loss + alpha * training._symmetric_kl(logp) if alpha else loss), nll.detach()


LOSSES = {"written-out gradient": smoothed_ce_and_kl, "autograd": autograd_loss}


def median_ms(run, variants: dict, repeats: int, warmup: int = 2) -> dict[str, float]:
    """Median milliseconds of run(variant) for each variant, calls interleaved (the order alternating)."""
    times: dict[str, list[float]] = {k: [] for k in variants}
    for i in range(repeats + warmup):
        for name, variant in list(variants.items())[:: 1 if i % 2 else -1]:
            t0 = time.perf_counter()
            run(variant)
            if i >= warmup:
                times[name].append(1e3 * (time.perf_counter() - t0))
    return {k: statistics.median(v) for k, v in times.items()}


def loss_alone(rows: int, vocab: int, dtype: torch.dtype, alpha: float, repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    logits = (3 * torch.randn(rows, vocab)).to(dtype)
    target = torch.randint(4, vocab, (rows,))

    def run(loss_fn):
        z = logits.detach().requires_grad_()
        loss, _ = loss_fn(z, target, 0.1, alpha)
        loss.backward()

    torch.testing.assert_close(*[fn(logits.double(), target, 0.1, alpha)[0] for fn in LOSSES.values()])
    return median_ms(run, LOSSES, repeats)


def whole_steps(precision: str, r_drop: float, steps: int) -> dict[str, float]:
    fields, vocab, _, _ = SHAPES["small"]
    c = ModelConfig(src_vocab_size=vocab, tgt_vocab_size=vocab, dropout=0.1, max_len=256, **fields)
    torch.manual_seed(0)
    models = {name: Transformer(c) for name in LOSSES}
    for m in list(models.values())[1:]:
        m.load_state_dict(next(iter(models.values())).state_dict())
    opts = {name: adam(m.parameters(), (0.9, 0.98), 1e-9) for name, m in models.items()}
    gen = torch.Generator().manual_seed(0)
    batches = [Batch(*make_batch(256, 20, vocab, c.pad_id, gen), torch.arange(256)) for _ in range(steps + 2)]
    it = {name: iter(batches) for name in LOSSES}

    def run(name):
        training.smoothed_ce_and_kl = LOSSES[name]  # what batch_loss calls
        train_step(models[name], opts[name], [next(it[name])], 1e-4, 0.1, 1.0, precision, r_drop=r_drop)

    try:
        return median_ms(run, {name: name for name in LOSSES}, steps)
    finally:
        training.smoothed_ce_and_kl = smoothed_ce_and_kl


def report(label: str, ms: dict[str, float]) -> None:
    fused, plain = ms["written-out gradient"], ms["autograd"]
    print(f"  {label:48s} written-out {fused:8.1f} ms   autograd {plain:8.1f} ms   speed-up {plain / fused:5.2f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--precision", default="bf16", help="bf16 (train's --precision auto on a bf16 CPU) | fp32")
    p.add_argument("--rows", type=int, default=4096, help="target tokens of one copy of a batch")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    bound_kernel_cache(16)  # as train sets it
    reuse_freed_memory()
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.precision]
    print(f"torch {torch.__version__}, {args.threads} threads, {args.precision}, medians of {args.steps}")
    print("the loss alone, forward + backward:")
    report(f"{args.rows} rows x 8,000, plain", loss_alone(args.rows, 8000, dtype, 0.0, args.steps))
    report(f"2 x {args.rows} rows x 8,000, R-Drop 5", loss_alone(2 * args.rows, 8000, dtype, 5.0, args.steps))
    print("whole train_steps of the small shape (256 rows x <= 20 tokens):")
    report("plain", whole_steps(args.precision, 0.0, args.steps))
    report("R-Drop 5", whole_steps(args.precision, 5.0, args.steps))


if __name__ == "__main__":
    main()
