"""Batched beam search over the key/value cache, with the GNMT length penalty and n-best lists."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from transformer.decoding import Hypothesis, length_penalty, output_limits
from transformer.model import Transformer


@dataclass
class _Sentence:
    """The search state of one sentence: its k live prefixes and the hypotheses that finished."""

    prefixes: list[list[int]]
    logps: list[list[float]]
    finished: list[Hypothesis] = field(default_factory=list)

    def advance(self, candidates, token_lp: torch.Tensor, k: int, eos_id: int, alpha: float,
                at_limit: bool) -> list[tuple[int, int, float]] | None:
        """candidates: the 2k best (beam, token, score) extensions, best first. A top-k candidate
        that ends with </s> (or reaches the limit) finishes; the first k others go on. Returns them
        padded with dead beams to k, or None when the sentence is done."""
        chosen = []
        for rank, (beam, tok, score) in enumerate(candidates):
            if score == float("-inf"):
                break
            if tok == eos_id or at_limit:
                if rank < k:  # only a top-k candidate may finish, as in fairseq
                    toks = self.prefixes[beam] + [tok]
                    self.finished.append(Hypothesis(toks, self.logps[beam] + [float(token_lp[beam, tok])],
                                                    score / length_penalty(len(toks), alpha)))
                continue
            chosen.append((beam, tok, score))
            if len(chosen) == k:
                break
        if len(self.finished) >= k or at_limit or not chosen:
            return None
        chosen += [(chosen[0][0], chosen[0][1], float("-inf"))] * (k - len(chosen))  # dead beams
        self.prefixes = [self.prefixes[b] + [t] for b, t, _ in chosen]
        self.logps = [self.logps[b] + [float(token_lp[b, t])] for b, t, _ in chosen]
        return chosen


@torch.no_grad()
def beam_search(model: Transformer, src: torch.Tensor, bos_id: int, eos_id: int, beam_size: int = 5,
                n_best: int = 1, alpha: float = 0.6, max_len_a: float = 1.5, max_len_b: int = 10
                ) -> list[list[Hypothesis]]:
    """Keep the beam_size best prefixes of every sentence; a sentence is done once beam_size
    hypotheses have ended with </s> (or its length limit is reached). Finished sentences leave the
    batch. Ranked by sum(log p) / lp(|Y|); returns the n_best best per sentence, best first."""
    if not 1 <= n_best <= beam_size:
        raise ValueError(f"n_best ({n_best}) must be between 1 and beam_size ({beam_size})")
    batch, k, device = src.size(0), beam_size, src.device
    limits = output_limits(src, model.config.pad_id, max_len_a, max_len_b, model.config.max_len).tolist()
    cache, _ = model.encode(src)
    cache = cache.select(torch.arange(batch, device=device).repeat_interleave(k))  # (batch * k) rows
    states = [_Sentence([[] for _ in range(k)], [[] for _ in range(k)]) for _ in range(batch)]
    active = list(range(batch))  # original index of each sentence still searching
    scores = torch.full((batch, k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # one live prefix (<s>) per sentence at the start
    last = torch.full((batch * k, 1), bos_id, dtype=torch.long, device=device)
    step = 0
    while active:
        logits, _, _ = model.decode(last, cache)
        logp = F.log_softmax(logits[:, -1].float(), dim=-1)  # (active * k, vocab)
        vocab = logp.size(-1)
        total = (scores.view(-1, 1) + logp).view(len(active), k * vocab)
        top_scores, top_ids = total.topk(2 * k, dim=-1)  # (active, 2k): enough to keep k without </s>
        candidates = zip((top_ids // vocab).tolist(), (top_ids % vocab).tolist(), top_scores.tolist())
        token_lp = logp.view(len(active), k, vocab)
        rows, next_scores, next_tokens, survivors = [], [], [], []
        for i, (s, (beams, tokens, sc)) in enumerate(zip(active, candidates)):
            at_limit = step + 1 >= limits[s]
            chosen = states[s].advance(zip(beams, tokens, sc), token_lp[i], k, eos_id, alpha, at_limit)
            if chosen is None:
                continue
            rows.extend(i * k + b for b, _, _ in chosen)
            next_tokens.extend(t for _, t, _ in chosen)
            next_scores.append([c for _, _, c in chosen])
            survivors.append(s)
        active = survivors
        if active:
            cache = cache.select(torch.tensor(rows, device=device))
            scores = torch.tensor(next_scores, device=device)
            last = torch.tensor(next_tokens, device=device).view(-1, 1)
            step += 1
    return [sorted(st.finished, key=lambda h: -h.score)[:n_best] for st in states]
