"""Training maths: label-smoothed cross-entropy, learning-rate schedules, one optimizer step (paper 5.3, 5.4)."""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Protocol, Sequence

import torch

from transformer.fused_loss import log_softmax32, smoothed_ce_and_kl, smoothing_term
from transformer.model import Transformer


class BatchLike(Protocol):
    src: torch.Tensor  # (batch, src_len)
    tgt_in: torch.Tensor  # (batch, tgt_len), <s> first
    tgt_out: torch.Tensor  # (batch, tgt_len), </s> last

    @property
    def n_tokens(self) -> int: ...


def label_smoothed_nll(logits: torch.Tensor, target: torch.Tensor, epsilon: float,
                       pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy against q = (1 - eps) * one_hot(target) + eps / V, padding ignored (V: the
    classes with a finite logit, all of them but for an imported model's <s>).

    logits: (..., V), target: (...), e.g. (batch, len, V) and (batch, len), or the (n, V) rows of
    the non-pad positions only. Returns (summed loss, summed plain NLL); divide by the number of
    non-pad tokens for a mean.
    """
    return _smoothed_nll(log_softmax32(logits), target, epsilon, pad_id)


def _smoothed_nll(logp: torch.Tensor, target: torch.Tensor, epsilon: float, pad_id: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """label_smoothed_nll from the log-probabilities logp (..., V)."""
    keep = target != pad_id  # (...)
    nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)  # (...)
    smooth, _ = smoothing_term(logp)  # (...)
    loss = (1.0 - epsilon) * nll + epsilon * smooth
    return loss[keep].sum(), nll[keep].sum()


def symmetric_kl(logits: torch.Tensor) -> torch.Tensor:
    """R-Drop's consistency term (Liang et al., 2021): the two halves of `logits` (2n, V) are the same
    n rows under two dropout masks, P1 and P2. Returns the summed (KL(P1||P2) + KL(P2||P1)) / 2, i.e.
    sum (p1 - p2)(log p1 - log p2) / 2 over rows and classes (a class with log p = -inf in both adds 0)."""
    return _symmetric_kl(log_softmax32(logits))


def _symmetric_kl(logp: torch.Tensor) -> torch.Tensor:
    """symmetric_kl from the log-probabilities logp (2n, V)."""
    logp1, logp2 = logp.chunk(2)  # (n, V) each
    gap = (logp1 - logp2).nan_to_num(nan=0.0)
    return 0.5 * ((logp1.exp() - logp2.exp()) * gap).sum()


def batch_loss(model, b: BatchLike, epsilon: float, pad_id: int, r_drop: float = 0.0
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """label_smoothed_nll of one batch (through fused_loss, its gradient written out); logits only for
    the non-pad target positions (the output projection and softmax over padding would be thrown
    away). model: a Transformer, or one wrapped in DistributedDataParallel (its forward is the one
    that synchronises gradients).

    r_drop = alpha > 0: R-Drop. The batch goes through the model twice in one call (the two copies
    draw different dropout masks) and the loss is R-Drop's CE_1 + CE_2 + alpha * symmetric_kl,
    halved so its cross-entropy part is on a plain step's scale; the NLL is the mean of the copies."""
    keep = b.tgt_out != pad_id  # (batch, tgt_len)
    copies = 2 if r_drop else 1
    stack = (lambda t: torch.cat([t, t])) if r_drop else (lambda t: t)  # noqa: E731 - first copy first
    logits, _ = model(stack(b.src), stack(b.tgt_in), keep=stack(keep))  # (copies * n_keep, V)
    loss, nll = smoothed_ce_and_kl(logits, stack(b.tgt_out[keep]), epsilon, r_drop)
    return loss / copies, nll / copies


def noam_lr(step: int, d_model: int, warmup: int, factor: float = 1.0) -> float:
    """lrate = factor * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5); step counts from 1."""
    step = max(step, 1)
    return factor * d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)


def inverse_sqrt_lr(step: int, peak: float, warmup: int) -> float:
    """Linear warm-up to `peak` over `warmup` steps, then peak * sqrt(warmup / step)."""
    step = max(step, 1)
    return peak * min(step / max(warmup, 1), math.sqrt(max(warmup, 1) / step))


def learning_rate(step: int, schedule: str, d_model: int, warmup: int, factor: float, peak: float) -> float:
    if schedule == "noam":
        return noam_lr(step, d_model, warmup, factor)
    if schedule == "inverse_sqrt":
        return inverse_sqrt_lr(step, peak, warmup)
    if schedule == "constant":
        return peak
    raise ValueError(f"unknown schedule {schedule!r} (noam, inverse_sqrt, constant)")


def cooldown_factor(used: float, cooldown: float) -> float:
    """What the schedule's rate is multiplied by when `used` of the budget (0..1) is spent: 1 until the last
    `cooldown` of it, then falling linearly to 0 at its end (the decay of warm-up-stable-decay schedules,
    Hägele et al. 2024). cooldown 0 = always 1."""
    if cooldown <= 0.0:
        return 1.0
    return min(1.0, max(0.0, (1.0 - used) / cooldown))


def adam(params, betas: tuple[float, float], eps: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    """Adam (paper 5.3) through torch's fused kernel: one pass over all parameters instead of a
    dozen small operations per tensor (the same update; a resumed run keeps the implementation
    its checkpoint recorded). weight_decay > 0: AdamW (Loshchilov and Hutter, 2019), every step
    w <- w - lr * weight_decay * w besides Adam's update, for the weight matrices and embeddings
    only (biases and layer-norm gains and shifts are not decayed)."""
    if not weight_decay:
        return torch.optim.Adam(params, lr=0.0, betas=betas, eps=eps, fused=True)
    params = list(params)
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=0.0, betas=betas, eps=eps, fused=True)


@dataclass(frozen=True)
class StepStats:
    loss: float  # label-smoothed loss per target token
    nll: float  # plain negative log-likelihood per target token
    tokens: int  # target tokens in the step
    grad_norm: float  # before clipping


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: str):
    """Mixed precision: matrix products in bfloat16/float16, reductions in float32 (torch autocast)."""
    dtype = PRECISIONS[precision]
    return nullcontext() if dtype is None else torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, precision: str) -> "torch.amp.GradScaler | None":
    """float16 needs its loss scaled so small gradients do not underflow; bfloat16 and float32 do not."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


def unwrap(model) -> tuple[Transformer, bool]:
    """(the Transformer, whether it runs in DistributedDataParallel)."""
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(model, DistributedDataParallel):
        return model.module, True
    return model, False


def _all_sum(values: list[float], device: torch.device) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return t.tolist()


def train_step(model, optimizer: torch.optim.Optimizer, batches: Sequence[BatchLike], lr: float,
               label_smoothing: float, clip_norm: float, precision: str = "fp32",
               scaler: "torch.amp.GradScaler | None" = None, r_drop: float = 0.0) -> StepStats:
    """One optimizer update over `batches` (gradient accumulation), normalised by their target tokens.

    model: the Transformer, or the Transformer in DistributedDataParallel; then `batches` are this
    rank's share of the update, the token count is summed over ranks first and each rank's loss is
    scaled so the averaged gradient equals one process's over all the ranks' batches. Gradients are
    synchronised once, on the last batch (no_sync before). Reported loss and tokens are global.
    r_drop > 0: R-Drop's loss (batch_loss), each batch computed twice."""
    net, distributed = unwrap(model)
    net.train()
    device = next(net.parameters()).device
    for group in optimizer.param_groups:
        group["lr"] = lr
    local = sum(b.n_tokens for b in batches)
    tokens = int(_all_sum([local], device)[0]) if distributed else local
    ranks = torch.distributed.get_world_size() if distributed else 1
    optimizer.zero_grad(set_to_none=True)
    total_loss = total_nll = 0.0
    for i, b in enumerate(batches):
        sync = model.no_sync() if distributed and i < len(batches) - 1 else nullcontext()
        with sync:
            with autocast(device, precision):
                loss, nll = batch_loss(model, b, label_smoothing, net.config.pad_id, r_drop)
            scaled = loss * ranks / tokens  # DDP averages gradients over ranks: x ranks makes it a sum
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        total_loss += loss.item()
        total_nll += nll.item()
    if distributed:
        total_loss, total_nll = _all_sum([total_loss, total_nll], device)
    return StepStats(total_loss / tokens, total_nll / tokens, tokens, _update(net, optimizer, clip_norm, scaler))


def _update(net: Transformer, optimizer: torch.optim.Optimizer, clip_norm: float,
            scaler: "torch.amp.GradScaler | None") -> float:
    """Clip the global gradient norm and step (through the scaler, which skips a step whose gradients
    overflowed and lowers the scale). Returns the norm before clipping."""
    if scaler is not None:
        scaler.unscale_(optimizer)
    params = [p for p in net.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, clip_norm if clip_norm > 0 else float("inf"), foreach=True)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return float(norm)


def perplexity(nll: float) -> float:
    """exp(NLL per token), capped so a diverged model reads as a large number, not an overflow."""
    return math.exp(min(nll, 50.0))


@torch.no_grad()
def evaluate_loss(model: Transformer, batches, label_smoothing: float, precision: str = "fp32"
                  ) -> tuple[float, float]:
    """(label-smoothed loss, NLL) per target token over `batches`; exp(NLL) is the perplexity."""
    model.eval()
    device = next(model.parameters()).device
    total_loss = total_nll = 0.0
    tokens = 0
    for b in batches:
        with autocast(device, precision):
            loss, nll = batch_loss(model, b, label_smoothing, model.config.pad_id)
        total_loss, total_nll, tokens = total_loss + loss.item(), total_nll + nll.item(), tokens + b.n_tokens
    return total_loss / max(tokens, 1), total_nll / max(tokens, 1)
