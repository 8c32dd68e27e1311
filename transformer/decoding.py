"""Search over encode()/decode() with the key/value cache: greedy decoding (beam search in beam.py)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from transformer.errors import ParamError, named
from transformer.model import Transformer

LENGTH_STYLES = ("gnmt", "average")  # how sum(log p) is normalised by the output length (length_penalty)


@dataclass(frozen=True)
class Hypothesis:
    """One output sentence: token ids (no <s>, with </s> when it finished), per-token log-probs, score."""

    tokens: list[int]
    token_logprobs: list[float]
    score: float  # sum of log-probs, or the length-normalised score beam search ranked by

    def without_eos(self, eos_id: int) -> list[int]:
        """The output ids with the final </s> removed (when it finished)."""
        return self.tokens[:-1] if self.tokens and self.tokens[-1] == eos_id else self.tokens


def length_penalty(length: int, alpha: float, style: str = "gnmt") -> float:
    """lp(Y), the divisor of sum(log p) that ranks hypotheses; |Y| = length counts the output tokens
    including the final </s> (when it ended), never <s>.
    gnmt (Wu et al., 2016): ((5 + |Y|) / 6) ** alpha.
    average: |Y| ** alpha, as Hugging Face transformers' `length_penalty` (its generated length
    cur_len + 1 - decoder_prompt_len is the same count: the tokens after the decoder start token,
    </s> included), the style of CTranslate2 and of Marian's --normalize; alpha 1 ranks by the mean
    log p per token."""
    check_length_style(style)
    if style == "average":
        return float(length) ** alpha
    return ((5.0 + length) / 6.0) ** alpha


def check_length_style(style: str) -> None:
    """style must be one of LENGTH_STYLES (a ParamError naming length_style)."""
    if style not in LENGTH_STYLES:
        raise ParamError(f"{named('length_style')} must be {' or '.join(LENGTH_STYLES)}, got {style!r}",
                         "length_style")


def next_token_logprobs(logits: torch.Tensor, banned: tuple[int, ...] = ()) -> torch.Tensor:
    """log p of the next token at the decoder's last position: logits (rows, t, vocab) -> (rows, vocab)
    float32. The banned ids (<pad>, <s>: never an output) get -inf after the log_softmax and the others
    are not renormalised, as transformers' bad_words_ids does to its log-softmaxed scores, so a
    hypothesis' score stays the model's log-probability of it."""
    logp = F.log_softmax(logits[:, -1].float(), dim=-1)  # (rows, vocab)
    if banned:
        logp[:, list(banned)] = float("-inf")
    return logp


def output_limits(src: torch.Tensor, pad_id: int, max_len_a: float, max_len_b: int,
                  model_max_len: int) -> torch.Tensor:
    """Per-sentence output length limit a * src_len + b (src_len without padding), capped so
    <s> plus the output fits the positional table. (batch,) long."""
    src_len = (src != pad_id).sum(dim=1).double()
    limit = torch.floor(max_len_a * src_len + max_len_b).long()
    return limit.clamp(min=1, max=model_max_len - 1)


@torch.no_grad()
def greedy_search(model: Transformer, src: torch.Tensor, bos_id: int, eos_id: int,
                  max_len_a: float = 1.5, max_len_b: int = 10, alpha: float = 0.0, *,
                  length_style: str = "gnmt", banned: tuple[int, ...] = ()) -> list[Hypothesis]:
    """Pick the most probable token (never one of `banned`) at every step; score = sum(log p) / lp(|Y|)
    (length_penalty with alpha and length_style; alpha 0: the sum). src: (batch, src_len) right-padded
    ids. Rows that finish leave the batch, so a sentence's output never depends on its neighbours'."""
    check_length_style(length_style)
    batch = src.size(0)
    limits = output_limits(src, model.config.pad_id, max_len_a, max_len_b, model.config.max_len)
    cache, _ = model.encode(src)
    tokens: list[list[int]] = [[] for _ in range(batch)]
    logprobs: list[list[float]] = [[] for _ in range(batch)]
    active = torch.arange(batch, device=src.device)  # original row of each row still decoding
    last = torch.full((batch, 1), bos_id, dtype=torch.long, device=src.device)
    for step in range(int(limits.max())):
        logits, _, _ = model.decode(last, cache)  # (active, 1, vocab)
        lp, tok = next_token_logprobs(logits, banned).max(dim=-1)  # (active,)
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
    return [Hypothesis(t, p, float(sum(p)) / length_penalty(len(t), alpha, length_style))
            for t, p in zip(tokens, logprobs)]
