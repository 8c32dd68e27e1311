"""What the search may not (or should rather not) repeat: --no-repeat-ngram-size and --repetition-penalty.

Both read each row's own output so far, `History`: the tokens (rows, t), right-aligned, each row's
own `lengths` last tokens being its output (beam search left-pads the rows of sentences that joined
later). The repetition penalty is CTRL's (Keskar et al., 2019), as transformers' and CTranslate2's:
on the logits, before the softmax, a token already in the row's output has its logit divided by the
penalty when positive and multiplied by it when negative. The n-gram rule (fairseq, OpenNMT-py,
transformers, CTranslate2) gives -inf to every token that would complete an n-gram the row already
contains.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from transformer.errors import ParamError, named


@dataclass(frozen=True)
class History:
    """Each row's output so far: tokens (rows, t) right-aligned, lengths (rows,) its own count."""

    tokens: torch.Tensor
    lengths: torch.Tensor

    def own(self) -> torch.Tensor:
        """(rows, t) True where a column holds one of the row's own tokens (not left padding)."""
        t = self.tokens.size(1)
        return torch.arange(t, device=self.tokens.device) >= (t - self.lengths)[:, None]


@dataclass(frozen=True)
class Penalties:
    """The search's rules against repetition; the defaults change nothing."""

    no_repeat_ngram_size: int = 0  # 0: off; n: no n-gram twice in an output
    repetition_penalty: float = 1.0  # 1: off; > 1 discourages tokens already produced

    def __post_init__(self) -> None:
        if not 0 <= self.no_repeat_ngram_size <= 1000:
            raise ParamError(f"{named('no_repeat_ngram_size')} must be between 0 (off) and 1000, got "
                             f"{self.no_repeat_ngram_size}", "no_repeat_ngram_size")
        if not 0 < self.repetition_penalty <= 100 or self.repetition_penalty != self.repetition_penalty:
            raise ParamError(f"{named('repetition_penalty')} must be above 0 and at most 100 (1 = off), got "
                             f"{self.repetition_penalty}", "repetition_penalty")

    @property
    def active(self) -> bool:
        return self.no_repeat_ngram_size > 0 or self.repetition_penalty != 1.0

    def on_logits(self, logits: torch.Tensor, history: History) -> torch.Tensor:
        """The repetition penalty on (rows, vocab) logits of the next token."""
        if self.repetition_penalty == 1.0 or history.tokens.size(1) == 0:
            return logits
        seen = _seen(history, logits.size(1))
        p = self.repetition_penalty
        return torch.where(seen, torch.where(logits > 0, logits / p, logits * p), logits)

    def on_logprobs(self, logp: torch.Tensor, history: History) -> torch.Tensor:
        """-inf for every token that would repeat an n-gram of the row's output, (rows, vocab)."""
        n = self.no_repeat_ngram_size
        if n == 0 or history.tokens.size(1) < n:
            return logp
        tokens, own = history.tokens, history.own()
        windows = tokens.unfold(1, n, 1)  # (rows, t - n + 1, n): every n-gram of the row
        start_ok = own.unfold(1, n, 1).all(dim=2)  # the whole n-gram is the row's own
        current = tokens[:, tokens.size(1) - (n - 1):]  # (rows, n - 1) the n-gram the next token completes
        match = (windows[:, :, : n - 1] == current[:, None, :]).all(dim=2) & start_ok
        match &= (history.lengths >= n)[:, None]  # ... and those n - 1 tokens are the row's own too
        rows, where = match.nonzero(as_tuple=True)
        if rows.numel():
            logp = logp.clone()
            logp[rows, windows[rows, where, n - 1]] = float("-inf")
        return logp


def _seen(history: History, vocab: int) -> torch.Tensor:
    """(rows, vocab) True for each token among the row's own (counted, so padding columns add 0)."""
    seen = torch.zeros(history.tokens.size(0), vocab, dtype=torch.int32, device=history.tokens.device)
    seen.scatter_add_(1, history.tokens, history.own().to(torch.int32))
    return seen > 0
