"""GNMT's coverage penalty (Wu et al., 2016, section 7): a finished hypothesis that left source tokens
unattended ranks lower.

    s(Y, X) = log P(Y | X) / lp(Y) + cp(X; Y),    cp(X; Y) = beta * sum_i log(min(sum_j p_ij, 1.0))

p_ij is the attention the step producing output token j (its final </s> included) pays to source
token i: here the last decoder layer's cross-attention, mean over its heads. cp is 0 when every source
token has received a total attention of at least 1 and negative otherwise; beta 0 turns it off.
OpenNMT-py's `-coverage_penalty wu -beta` (without `-stepwise_penalty`) and CTranslate2's
`coverage_penalty` have it; as in GNMT and OpenNMT-py, it ranks the finished hypotheses and leaves the
search's pruning of the live prefixes to log P.
"""

from __future__ import annotations

import torch

from transformer.attention import AttentionRecord
from transformer.errors import ParamError, named

MAX_BETA = 10.0
TINY = 1e-20  # floor under a source token's coverage, so a token never attended costs log(1e-20), not -inf


def check_beta(beta: float) -> None:
    """beta must be a number in [0, MAX_BETA] (a ParamError naming coverage_penalty)."""
    if not 0.0 <= beta <= MAX_BETA:  # also refuses nan
        raise ParamError(f"{named('coverage_penalty')} must be between 0 (off) and {MAX_BETA:g}, got {beta}",
                         "coverage_penalty")


def step_attention(record: AttentionRecord) -> tuple[torch.Tensor, torch.Tensor]:
    """One decoding step's cross-attention record (rows, heads, 1, src_len) -> the mean over heads
    (rows, src_len) float32, and (rows, src_len) True at the real source tokens (the padding's
    pre-softmax scores are -inf)."""
    weights = record.weights[:, :, -1].float().mean(dim=1)  # (rows, src_len)
    real = torch.isfinite(record.scores[:, 0, -1])  # (rows, src_len)
    return weights, real


def fit_width(coverage: torch.Tensor, width: int) -> torch.Tensor:
    """(rows, w) coverage as (rows, width): the source columns sentences added later bring are 0 so far;
    columns beyond `width` are ones every sentence pads (dropped by the cache), so 0 too."""
    if coverage.size(1) < width:
        return torch.nn.functional.pad(coverage, (0, width - coverage.size(1)))
    return coverage[:, :width]


def coverage_penalty(coverage: torch.Tensor, real: torch.Tensor, beta: float) -> torch.Tensor:
    """cp of each row: coverage (rows, src_len) the attention each source token has received so far,
    real (rows, src_len) the tokens that count -> (rows,) beta * sum over real i of log(min(c_i, 1))."""
    logs = coverage.clamp(min=TINY, max=1.0).log()
    return beta * torch.where(real, logs, torch.zeros_like(logs)).sum(dim=1)
