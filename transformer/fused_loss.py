"""The training loss with its gradient written out: label-smoothed cross-entropy (paper 5.4) plus,
for R-Drop (Liang et al., 2021), alpha times the symmetric KL divergence between the two halves.

The same formulas through autograd (training.label_smoothed_nll, training.symmetric_kl) make about a
dozen passes each way over (rows, V) float32 tensors, and R-Drop's doubled batch has 8,192 rows of
8,000 classes in the `small` preset: 260 MB a pass. The closed forms below make a few.

With l = log softmax(z), p = exp(l), u the uniform distribution over the classes with a finite
logit, y the target:
  CE    = (1 - eps) * -l[y] + eps * -mean_u(l)            dCE/dz = p - (1 - eps) onehot(y) - eps u
  KLsym = sum_v (p1 - p2)(l1 - l2) / 2 = (E1 - E2) / 2, where d = l1 - l2, E1 = sum p1 d, E2 = sum p2 d
          dKLsym/dz1 = (p1 (d - E1 + 1) - p2) / 2          dKLsym/dz2 = (p2 (E2 - d + 1) - p1) / 2
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable
from torch.nn import functional as F


def log_softmax32(logits: torch.Tensor) -> torch.Tensor:
    """log softmax over the last dimension in float32 at least (bf16/fp16 logits), float64 kept."""
    return F.log_softmax(logits, dim=-1, dtype=torch.promote_types(logits.dtype, torch.float32))


def smoothing_term(logp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(-mean log p over the classes, (..., V) -> (...)): the cross-entropy against the uniform
    distribution u; and None, or where a class is never produced (log p = -inf: an imported Marian
    model's <s>) the mask of the finite classes, u then being uniform over those."""
    smooth = -logp.mean(dim=-1)
    if bool(torch.isfinite(smooth).all()):
        return smooth, None
    finite = torch.isfinite(logp)
    return -logp.masked_fill(~finite, 0.0).sum(dim=-1) / finite.sum(dim=-1), finite


def smoothed_ce_and_kl(logits: torch.Tensor, target: torch.Tensor, epsilon: float,
                       alpha: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed loss, summed plain NLL) over the rows of `logits` (rows, V) and `target` (rows,), every
    row counted (pass the non-pad positions only). alpha > 0: the rows are two copies of the same n
    positions, first copy first, and the loss adds alpha times their summed symmetric KL. The NLL
    carries no gradient. Computed in float32 (float64 stays float64); the gradient has logits' dtype."""
    return _SmoothedCEWithKL.apply(logits, target, epsilon, alpha)


class _SmoothedCEWithKL(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, target, epsilon, alpha):
        logp = log_softmax32(logits)  # (rows, V)
        nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)  # (rows,)
        smooth, finite = smoothing_term(logp)  # (rows,), None or (rows, V)
        loss = ((1.0 - epsilon) * nll + epsilon * smooth).sum()
        nll = nll.sum()
        ctx.mark_non_differentiable(nll)
        if not alpha and not ctx.needs_input_grad[0]:
            return loss, nll
        gap = e1 = e2 = None
        if alpha:
            l1, l2 = logp.chunk(2)  # (n, V) each
            gap = l1 - l2  # d
            if finite is not None:
                gap.nan_to_num_(nan=0.0)  # -inf in both copies: no divergence there
        p = logp.exp_()  # (rows, V): log p is not needed any more
        if alpha:
            p1, p2 = p.chunk(2)
            e1 = (p1 * gap).sum(dim=-1, keepdim=True)  # (n, 1)
            e2 = (p2 * gap).sum(dim=-1, keepdim=True)
            loss = loss + alpha * 0.5 * (e1.sum() - e2.sum())
        ctx.save_for_backward(p, target, gap, e1, e2, finite)
        ctx.epsilon, ctx.alpha, ctx.dtype = epsilon, alpha, logits.dtype
        return loss, nll

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss, _grad_nll):
        p, target, gap, e1, e2, finite = ctx.saved_tensors
        eps, c = ctx.epsilon, ctx.alpha * 0.5
        if finite is None:
            uniform = eps / p.shape[-1]
        else:  # u over the finite classes only
            uniform = finite.to(p.dtype) * (eps / finite.sum(-1, keepdim=True).to(p.dtype))
        if not ctx.alpha:
            grad = p - uniform
        else:
            grad = torch.empty_like(p)
            p1, p2 = p.chunk(2)
            top, bottom = grad.chunk(2)
            # p1 (c d + 1 + c (1 - E1)) - c p2  and  p2 (-c d + 1 + c (1 + E2)) - c p1
            torch.add(1.0 + c * (1.0 - e1), gap, alpha=c, out=top).mul_(p1).add_(p2, alpha=-c)
            torch.add(1.0 + c * (1.0 + e2), gap, alpha=-c, out=bottom).mul_(p2).add_(p1, alpha=-c)
            grad.sub_(uniform)
        grad[torch.arange(len(target), device=grad.device), target] -= 1.0 - eps
        out = grad if ctx.dtype == grad.dtype else torch.empty(grad.shape, dtype=ctx.dtype, device=grad.device)
        return torch.mul(grad, grad_loss, out=out), None, None, None
