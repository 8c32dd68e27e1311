"""Decoding over a vocabulary shortlist (CTranslate2's vmap, Marian's lexical shortlist).

A batch may only produce the target tokens likely for its source tokens: the union of each distinct
source token's candidates (data/shortlist.py counts them) and a set every batch keeps (the most
frequent target tokens and the special ones). The pre-softmax projection, the softmax and the
search's top-k then run over that union instead of the whole vocabulary, and log p is renormalised
over it, as in Marian and CTranslate2. The searches are unchanged: they run on Shortlisted(model,
ids), whose token numbers are positions in `ids`; the caller maps its ids in and the hypotheses out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from transformer.cache import DecoderCache


@dataclass(frozen=True)
class Shortlist:
    """Each source token's candidate target tokens (compressed rows) and the tokens always allowed."""

    offsets: torch.Tensor  # (src_vocab + 1,) int64: source token s has targets[offsets[s]:offsets[s + 1]]
    targets: torch.Tensor  # (n,) int64 target ids
    always: torch.Tensor  # (m,) int64 target ids every batch may produce

    def ids(self, src: torch.Tensor) -> torch.Tensor:
        """src: (batch, src_len) source ids -> the sorted target ids the batch may produce."""
        words = torch.unique(src.cpu())  # (w,)
        starts, ends = self.offsets[words], self.offsets[words + 1]
        lengths = ends - starts  # (w,)
        first = torch.repeat_interleave(starts - (torch.cumsum(lengths, 0) - lengths), lengths)
        picked = self.targets[first + torch.arange(int(lengths.sum()))]  # every candidate of every word
        return torch.unique(torch.cat([picked, self.always]))


class Shortlisted(nn.Module):
    """`model` with its output vocabulary cut to `ids` (sorted target ids): decode() returns logits over
    ids (position j scores token ids[j]) and reads the tokens it is fed as positions; encode() is the
    model's own. Searches run on it unchanged; position() and tokens() translate ids in and out."""

    def __init__(self, model: nn.Module, ids: torch.Tensor) -> None:
        super().__init__()
        self.model, self.config = model, model.config
        self.register_buffer("ids", ids.to(model.generator.weight.device), persistent=False)
        self.generator = model.generator.rows(self.ids)  # (len(ids), d_model) of the projection

    def encode(self, src: torch.Tensor, need_weights: bool = False):
        return self.model.encode(src, need_weights)

    def decode(self, tgt: torch.Tensor, cache: DecoderCache, need_weights: bool = False,
               keep: torch.Tensor | None = None):
        """Transformer.decode over the shortlist: tgt (batch, new_len) positions in ids; logits
        (batch, new_len, len(ids)), or (n_keep, len(ids)) with keep."""
        h, self_records, cross_records = self.model.decode_hidden(self.ids[tgt], cache, need_weights)
        if keep is not None:
            h = h[keep]
        return self.generator(h), self_records, cross_records

    def position(self, token: int) -> int:
        """Where target id `token` is in ids (ValueError when the shortlist lacks it)."""
        j = int(torch.searchsorted(self.ids, token))
        if j == len(self.ids) or int(self.ids[j]) != token:
            raise ValueError(f"target id {token} is not in the shortlist")
        return j

    def tokens(self, positions: list[int]) -> list[int]:
        """Positions in ids -> target ids."""
        return self.ids[positions].tolist() if positions else []
