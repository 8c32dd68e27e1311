"""Search over encode()/decode() with the key/value cache: greedy decoding (beam search in beam.py)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from transformer.errors import ParamError, named
from transformer.model import Transformer
from transformer.penalties import History, Penalties
from transformer.prefix import Prefix, force
from transformer.sampling import Sampling

LENGTH_STYLES = ("gnmt", "average")  # how sum(log p) is normalised by the output length (length_penalty)


@dataclass(frozen=True)
class Hypothesis:
    """One output sentence: token ids (no <s>, with </s> when it finished), per-token log-probs, score."""

    tokens: list[int]
    token_logprobs: list[float]
    score: float  # sum of log-probs, or the length-normalised score (+ coverage penalty) beam search ranked by

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


NO_PENALTIES = Penalties()


def next_token_logprobs(logits: torch.Tensor, banned: tuple[int, ...] = (), penalties: Penalties = NO_PENALTIES,
                        history: History | None = None, forced: torch.Tensor | None = None) -> torch.Tensor:
    """log p of the next token at the decoder's last position: logits (rows, t, vocab) -> (rows, vocab)
    float32. The banned ids (<pad>, <s>: never an output) get -inf after the log_softmax and the others
    are not renormalised, as transformers' bad_words_ids does to its log-softmaxed scores, so a
    hypothesis' score stays the model's log-probability of it. With penalties (and each row's
    history), the repetition penalty changes the logits before the softmax and repeated n-grams get
    -inf after it (transformer/penalties.py). forced (rows,): the token a row must produce (a target
    prefix, transformer/prefix.py), FREE where none."""
    last = logits[:, -1].float()  # (rows, vocab)
    if penalties.active:
        last = penalties.on_logits(last, history)
    logp = F.log_softmax(last, dim=-1)
    raw = logp.clone() if forced is not None else None
    if banned:
        logp[:, list(banned)] = float("-inf")
    if penalties.active:
        logp = penalties.on_logprobs(logp, history)
    if forced is not None:
        logp = force(logp, raw, forced)
    return logp


def output_limits(src: torch.Tensor, pad_id: int, max_len_a: float, max_len_b: int,
                  model_max_len: int, prefix: Prefix | None = None) -> torch.Tensor:
    """Per-sentence output length limit a * src_len + b (src_len without padding), at least a
    target prefix plus one token, capped so <s> plus the output fits the positional table. (batch,) long."""
    src_len = (src != pad_id).sum(dim=1).double()
    limit = torch.floor(max_len_a * src_len + max_len_b).long()
    if prefix is not None:
        limit = torch.maximum(limit, prefix.lengths.to(limit.device) + 1)
    return limit.clamp(min=1, max=model_max_len - 1)


@torch.no_grad()
def greedy_search(model: Transformer, src: torch.Tensor, bos_id: int, eos_id: int,
                  max_len_a: float = 1.5, max_len_b: int = 10, alpha: float = 0.0, *,
                  length_style: str = "gnmt", banned: tuple[int, ...] = (), penalties: Penalties = NO_PENALTIES,
                  sampling: Sampling | None = None, sample: torch.Tensor | None = None,
                  prefix: Prefix | None = None) -> list[Hypothesis]:
    """Pick the most probable token (never one of `banned`) at every step, or with `sampling` draw
    it (row i is sample number sample[i] of its sentence, default 0); score = sum(log p) / lp(|Y|)
    (length_penalty with alpha and length_style; alpha 0: the sum). src: (batch, src_len)
    right-padded ids; prefix: each row's forced first tokens. Rows that finish leave the batch, so a
    sentence's output never depends on its neighbours'."""
    check_length_style(length_style)
    batch = src.size(0)
    limits = output_limits(src, model.config.pad_id, max_len_a, max_len_b, model.config.max_len, prefix)
    cache, _ = model.encode(src)
    tokens: list[list[int]] = [[] for _ in range(batch)]
    logprobs: list[list[float]] = [[] for _ in range(batch)]
    active = torch.arange(batch, device=src.device)  # original row of each row still decoding
    last = torch.full((batch, 1), bos_id, dtype=torch.long, device=src.device)
    history = torch.empty(batch, 0, dtype=torch.long, device=src.device)  # (active, step), with penalties
    keys = None
    if sampling is not None:
        number = torch.zeros(batch, dtype=torch.long, device=src.device) if sample is None else sample
        keys = sampling.keys(src, model.config.pad_id, number)  # (batch,)
    limit = limits.tolist()  # per original row, read in the loop below
    for step in range(max(limit)):
        logits, _, _ = model.decode(last, cache)  # (active, 1, vocab)
        seen = History(history, torch.full((active.numel(),), step, device=src.device)) if penalties.active else None
        forced = prefix.select(active).at(step) if prefix is not None and step < prefix.tokens.size(1) else None
        logp = next_token_logprobs(logits, banned, penalties, seen, forced)  # (active, vocab)
        tok = logp.argmax(dim=-1) if keys is None else sampling.draw(logp, keys, step)  # (active,)
        lp = logp.gather(1, tok[:, None]).squeeze(1)
        keep = []
        for i, (row, t, p) in enumerate(zip(active.tolist(), tok.tolist(), lp.tolist())):
            tokens[row].append(t)
            logprobs[row].append(p)
            if t != eos_id and step + 1 < limit[row]:
                keep.append(i)
        if not keep:
            break
        if penalties.active:
            history = torch.cat([history, tok[:, None]], dim=1)
        if len(keep) < active.numel():
            index = torch.tensor(keep, device=src.device)
            cache.reorder(index, index)  # the rows' past dropped by the next step's copy, their memory now
            active, tok, history = active[index], tok[index], history[index]
            keys = None if keys is None else keys[index]
        last = tok[:, None]
    return [Hypothesis(t, p, float(sum(p)) / length_penalty(len(t), alpha, length_style))
            for t, p in zip(tokens, logprobs)]


def sample_search(model: Transformer, src: torch.Tensor, bos_id: int, eos_id: int, sampling: Sampling,
                  samples: int = 1, max_len_a: float = 1.5, max_len_b: int = 10, alpha: float = 0.0, *,
                  length_style: str = "gnmt", banned: tuple[int, ...] = (),
                  penalties: Penalties = NO_PENALTIES, prefix: Prefix | None = None) -> list[list[Hypothesis]]:
    """`samples` draws per sentence (sample numbers 0..samples-1, each reproducible alone), best
    score first."""
    batch = src.size(0)
    rows = src.repeat_interleave(samples, dim=0)
    number = torch.arange(samples, device=src.device).repeat(batch)
    hyps = greedy_search(model, rows, bos_id, eos_id, max_len_a, max_len_b, alpha, length_style=length_style,
                         banned=banned, penalties=penalties, sampling=sampling, sample=number,
                         prefix=None if prefix is None else prefix.repeat(samples))
    return [sorted(hyps[i * samples:(i + 1) * samples], key=lambda h: -h.score) for i in range(batch)]


@torch.no_grad()
def score_targets(model: Transformer, src: torch.Tensor, targets: list[list[int]], bos_id: int, eos_id: int,
                  alpha: float = 0.0, *, length_style: str = "gnmt") -> list[Hypothesis]:
    """The model's log-probability of given outputs (sockeye-score, fairseq --score-reference): one
    teacher-forced pass over <s> + target, each target (ids without </s>) followed by </s>; score =
    sum(log p) / lp(|Y|) as the searches rank (alpha 0: log P). src: (batch, src_len) right-padded.
    The decoder's positions after a target's end read padding that no real position attends to
    (the causal mask), so each score is what the target alone would get."""
    check_length_style(length_style)
    pad = model.config.pad_id
    outputs = [list(t) + [eos_id] for t in targets]
    longest = max(len(o) for o in outputs)
    tgt_in = torch.full((len(outputs), longest), pad, dtype=torch.long, device=src.device)
    gold = torch.zeros_like(tgt_in)
    for i, out in enumerate(outputs):
        tgt_in[i, : len(out)] = torch.tensor([bos_id] + out[:-1])
        gold[i, : len(out)] = torch.tensor(out)
    logits, _ = model(src, tgt_in)  # (batch, longest, vocab)
    logp = F.log_softmax(logits.float(), dim=-1).gather(2, gold[..., None]).squeeze(2)  # (batch, longest)
    hyps = []
    for out, row in zip(outputs, logp.tolist()):
        lps = row[: len(out)]
        hyps.append(Hypothesis(out, lps, float(sum(lps)) / length_penalty(len(out), alpha, length_style)))
    return hyps
