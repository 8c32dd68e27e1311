"""A target prefix: the first tokens of an output are given and the search continues from there
(CTranslate2's target_prefix, fairseq's --prefix-size, transformers' forced decoder ids).

One rule, applied at every step by greedy search, sampling and beam search alike: a row whose
sentence has not yet produced its whole prefix may produce only the prefix's next token, which keeps
its log-probability under the model (before any ban), every other token getting -inf. The scores
therefore stay the model's log P of the whole output, prefix included, and a sentence's output limit
is at least its prefix plus one token (decoding.output_limits).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

FREE = -1  # no forced token at this step


@dataclass(frozen=True)
class Prefix:
    """The forced first tokens of each sentence: tokens (sentences, longest) right-padded with FREE."""

    tokens: torch.Tensor

    @classmethod
    def of(cls, rows: Sequence[Sequence[int]], device: torch.device | str | None = None) -> "Prefix":
        """One prefix per sentence (lists of ids, possibly empty)."""
        longest = max((len(r) for r in rows), default=0)
        tokens = torch.full((len(rows), longest), FREE, dtype=torch.long)
        for i, row in enumerate(rows):
            tokens[i, : len(row)] = torch.tensor(list(row), dtype=torch.long)
        return cls(tokens.to(device))

    @classmethod
    def empty(cls, sentences: int, device: torch.device | str | None = None) -> "Prefix":
        return cls(torch.full((sentences, 0), FREE, dtype=torch.long, device=device))

    @property
    def lengths(self) -> torch.Tensor:
        """(sentences,) the number of forced tokens of each sentence."""
        return (self.tokens != FREE).sum(dim=1)

    def at(self, steps: torch.Tensor | int) -> torch.Tensor:
        """(sentences,) the token each sentence must produce at its step `steps` (a number or one per
        sentence), FREE where its prefix is behind it."""
        n, width = self.tokens.shape
        steps = torch.as_tensor(steps, device=self.tokens.device).expand(n)
        if width == 0:
            return torch.full((n,), FREE, dtype=torch.long, device=self.tokens.device)
        column = self.tokens.gather(1, steps.clamp(max=width - 1)[:, None]).squeeze(1)
        return torch.where(steps < width, column, FREE)

    def select(self, index: torch.Tensor) -> "Prefix":
        return Prefix(self.tokens.index_select(0, index))

    def repeat(self, times: int) -> "Prefix":
        """Each sentence's prefix `times` times in a row (one per sample)."""
        return Prefix(self.tokens.repeat_interleave(times, dim=0))

    def cat(self, other: "Prefix") -> "Prefix":
        """These sentences followed by other's."""
        width = max(self.tokens.size(1), other.tokens.size(1))
        pad = lambda t: torch.nn.functional.pad(t, (0, width - t.size(1)), value=FREE)  # noqa: E731
        return Prefix(torch.cat([pad(self.tokens), pad(other.tokens.to(self.tokens.device))]))


def force(logp: torch.Tensor, raw: torch.Tensor, forced: torch.Tensor) -> torch.Tensor:
    """logp (rows, vocab) with every row whose forced[row] is not FREE left only that token, at its
    log p in `raw` (the log-softmax before bans)."""
    rows = (forced != FREE).nonzero().squeeze(1)
    if rows.numel():
        tokens = forced[rows]
        kept = raw[rows, tokens]
        logp[rows] = float("-inf")
        logp[rows, tokens] = kept
    return logp
