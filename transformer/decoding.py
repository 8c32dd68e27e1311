"""Search over encode()/decode() with the key/value cache: greedy decoding (beam search in beam.py)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from transformer.model import Transformer


@dataclass(frozen=True)
class Hypothesis:
    """One output sentence: token ids (no <s>, with </s> when it finished), per-token log-probs, score."""

    tokens: list[int]
    token_logprobs: list[float]
    score: float  # sum of log-probs, or the length-normalised score beam search ranked by

    def without_eos(self, eos_id: int) -> list[int]:
        """The output ids with the final </s> removed (when it finished)."""
        return self.tokens[:-1] if self.tokens and self.tokens[-1] == eos_id else self.tokens


def length_penalty(length: int, alpha: float) -> float:
    """GNMT: lp(Y) = ((5 + |Y|) / 6) ** alpha; |Y| counts the output tokens including </s>."""
    return ((5.0 + length) / 6.0) ** alpha


def output_limits(src: torch.Tensor, pad_id: int, max_len_a: float, max_len_b: int,
                  model_max_len: int) -> torch.Tensor:
    """Per-sentence output length limit a * src_len + b (src_len without padding), capped so
    <s> plus the output fits the positional table. (batch,) long."""
    src_len = (src != pad_id).sum(dim=1).double()
    limit = torch.floor(max_len_a * src_len + max_len_b).long()
    return limit.clamp(min=1, max=model_max_len - 1)


@torch.no_grad()
def greedy_search(model: Transformer, src: torch.Tensor, bos_id: int, eos_id: int,
                  max_len_a: float = 1.5, max_len_b: int = 10, alpha: float = 0.0) -> list[Hypothesis]:
    """Pick the most probable token at every step; score = sum(log p) / lp(|Y|) (alpha 0: the sum). src: (batch, src_len) right-padded ids.
    Rows that finish leave the batch, so a sentence's output never depends on its neighbours'."""
    batch = src.size(0)
    limits = output_limits(src, model.config.pad_id, max_len_a, max_len_b, model.config.max_len)
    cache, _ = model.encode(src)
    tokens: list[list[int]] = [[] for _ in range(batch)]
    logprobs: list[list[float]] = [[] for _ in range(batch)]
    active = torch.arange(batch, device=src.device)  # original row of each row still decoding
    last = torch.full((batch, 1), bos_id, dtype=torch.long, device=src.device)
    for step in range(int(limits.max())):
        logits, _, _ = model.decode(last, cache)  # (active, 1, vocab)
        lp, tok = F.log_softmax(logits[:, -1].float(), dim=-1).max(dim=-1)  # (active,)
        keep = []
        for i, (row, t, p) in enumerate(zip(active.tolist(), tok.tolist(), lp.tolist())):
            tokens[row].append(t)
            logprobs[row].append(p)
            if t != eos_id and step + 1 < int(limits[row]):
                keep.append(i)
        if not keep:
            break
        if len(keep) < active.numel():
            index = torch.tensor(keep, device=src.device)
            cache = cache.select(index)
            active, tok = active[index], tok[index]
        last = tok[:, None]
    return [Hypothesis(t, p, float(sum(p)) / length_penalty(len(t), alpha)) for t, p in zip(tokens, logprobs)]
