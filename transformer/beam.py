"""Batched beam search over the key/value cache, with the GNMT length penalty and n-best lists."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from transformer.decoding import Hypothesis, length_penalty, output_limits
from transformer.model import Transformer


@torch.no_grad()
def beam_search(model: Transformer, src: torch.Tensor, bos_id: int, eos_id: int, beam_size: int = 5,
                n_best: int = 1, alpha: float = 0.6, max_len_a: float = 1.5, max_len_b: int = 10
                ) -> list[list[Hypothesis]]:
    """Keep the beam_size best prefixes of every sentence; a sentence is done once beam_size
    hypotheses have ended with </s> (or its length limit is reached). Finished sentences leave the
    batch. Ranked by sum(log p) / lp(|Y|); returns the n_best best per sentence, best first."""
    if not 1 <= n_best <= beam_size:
        raise ValueError(f"n_best ({n_best}) must be between 1 and beam_size ({beam_size})")
    batch, k = src.size(0), beam_size
    device = src.device
    limits = output_limits(src, model.config.pad_id, max_len_a, max_len_b, model.config.max_len).tolist()
    cache, _ = model.encode(src)
    cache = cache.select(torch.arange(batch, device=device).repeat_interleave(k))  # (batch * k) rows
    sentences = list(range(batch))  # original index of each sentence still searching
    scores = torch.full((batch, k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # one live prefix (<s>) per sentence at the start
    prefixes: list[list[list[int]]] = [[[] for _ in range(k)] for _ in range(batch)]
    logps: list[list[list[float]]] = [[[] for _ in range(k)] for _ in range(batch)]
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    last = torch.full((batch * k, 1), bos_id, dtype=torch.long, device=device)
    step = 0
    while sentences:
        logits, _, _ = model.decode(last, cache)
        logp = F.log_softmax(logits[:, -1].float(), dim=-1)  # (active * k, vocab)
        vocab = logp.size(-1)
        total = (scores.view(-1, 1) + logp).view(len(sentences), k * vocab)
        top_scores, top_ids = total.topk(2 * k, dim=-1)  # (active, 2k): enough to keep k without </s>
        top_beams, top_tokens = (top_ids // vocab).tolist(), (top_ids % vocab).tolist()
        top_scores_l = top_scores.tolist()
        token_lp = logp.view(len(sentences), k, vocab)
        keep_rows, next_scores, next_tokens, survivors = [], [], [], []
        for i, s in enumerate(sentences):
            chosen_beams, chosen_tokens, chosen_scores = [], [], []
            at_limit = step + 1 >= limits[s]
            for rank, (beam, tok, sc) in enumerate(zip(top_beams[i], top_tokens[i], top_scores_l[i])):
                if sc == float("-inf"):
                    break
                lp = float(token_lp[i, beam, tok])
                if tok == eos_id or at_limit:
                    if rank < k:  # only a top-k candidate may finish, as in fairseq
                        toks = prefixes[s][beam] + [tok]
                        finished[s].append(Hypothesis(toks, logps[s][beam] + [lp],
                                                      sc / length_penalty(len(toks), alpha)))
                    continue
                chosen_beams.append(beam)
                chosen_tokens.append(tok)
                chosen_scores.append(sc)
                if len(chosen_beams) == k:
                    break
            if len(finished[s]) >= k or at_limit or not chosen_beams:
                continue
            while len(chosen_beams) < k:  # pad with dead beams
                chosen_beams.append(chosen_beams[0])
                chosen_tokens.append(chosen_tokens[0])
                chosen_scores.append(float("-inf"))
            prefixes[s] = [prefixes[s][b] + [t] for b, t in zip(chosen_beams, chosen_tokens)]
            logps[s] = [logps[s][b] + [float(token_lp[i, b, t])] for b, t in zip(chosen_beams, chosen_tokens)]
            keep_rows.extend(i * k + b for b in chosen_beams)
            next_scores.append(chosen_scores)
            next_tokens.extend(chosen_tokens)
            survivors.append(s)
        sentences = survivors
        if not sentences:
            break
        cache = cache.select(torch.tensor(keep_rows, device=device))
        scores = torch.tensor(next_scores, device=device)
        last = torch.tensor(next_tokens, device=device).view(-1, 1)
        step += 1
    return [sorted(f, key=lambda h: -h.score)[:n_best] for f in finished]
