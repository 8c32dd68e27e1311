"""An ensemble: several models with the same vocabularies searched as one (OpenNMT-py, fairseq and
Marian have it).

At every step each member decodes from its own cache and the ensemble's "logits" are the mean of the
members' log-probabilities, log p(y) = (1/M) sum_m log p_m(y) (OpenNMT-py's and Marian's rule; fairseq
averages the probabilities instead). The searches take the log-softmax of what decode() returns, so
they search the renormalised product of the members' distributions; for one member, or for M copies
of one model, that is the model's own log p. Anything that reads decode() or forward() works
unchanged: greedy, beam and sampling, target prefixes, scoring a given target.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn
from torch.nn import functional as F

from transformer.cache import DecoderCache
from transformer.config import ModelConfig
from transformer.model import AttentionMaps, Transformer


class EnsembleCache:
    """One DecoderCache per member, moved together: every operation the searches apply to a cache."""

    def __init__(self, members: list[DecoderCache]) -> None:
        self.members = members

    @property
    def starts(self) -> torch.Tensor | None:
        return self.members[0].starts

    def reorder(self, rows: torch.Tensor, sentences: torch.Tensor | None = None) -> None:
        for c in self.members:
            c.reorder(rows, sentences)

    def admit(self, other: "EnsembleCache", rows_per_sentence: int, rows_now: int) -> None:
        for c, o in zip(self.members, other.members):
            c.admit(o, rows_per_sentence, rows_now)

    def compact(self) -> None:
        for c in self.members:
            c.compact()


class Ensemble(nn.Module):
    """Models searched as one; config is the first member's, with the shortest member's positions.
    Attention maps (need_weights, return_attention) are the first member's."""

    def __init__(self, models: list[Transformer]) -> None:
        super().__init__()
        if not models:
            raise ValueError("an ensemble needs at least one model")
        self.members = nn.ModuleList(models)
        self.config: ModelConfig = replace(models[0].config, max_len=min(m.config.max_len for m in models))

    def encode(self, src: torch.Tensor, need_weights: bool = False) -> tuple[EnsembleCache, list]:
        """Every member's cache, and the first member's encoder records."""
        first, records = self.members[0].encode(src, need_weights)
        return EnsembleCache([first] + [m.encode(src)[0] for m in self.members[1:]]), records

    def decode(self, tgt: torch.Tensor, cache: EnsembleCache, need_weights: bool = False,
               keep: torch.Tensor | None = None) -> tuple[torch.Tensor, list, list]:
        """The mean of the members' log-probabilities, (batch, new_len, vocab) float32 (or
        (n_keep, vocab) with keep), and the first member's attention records."""
        logits, self_records, cross_records = self.members[0].decode(tgt, cache.members[0], need_weights, keep)
        total = F.log_softmax(logits.float(), dim=-1)
        for m, c in zip(self.members[1:], cache.members[1:]):
            total = total + F.log_softmax(m.decode(tgt, c, False, keep)[0].float(), dim=-1)
        return total / len(self.members), self_records, cross_records

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor, return_attention: bool = False,
                keep: torch.Tensor | None = None) -> tuple[torch.Tensor, AttentionMaps | None]:
        """Teacher forcing: the mean log-probabilities (batch, tgt_len, vocab) and the first member's maps."""
        cache, enc_records = self.encode(src, return_attention)
        logp, self_records, cross_records = self.decode(tgt_in, cache, return_attention, keep)
        return logp, AttentionMaps(enc_records, self_records, cross_records) if return_attention else None
