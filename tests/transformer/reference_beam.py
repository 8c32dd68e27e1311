"""The beam search that transformer.beam must reproduce, written for reading: one sentence at a time,
no key/value cache (the whole prefix through the model at each step), plain Python lists."""

from __future__ import annotations

import torch

from transformer.decoding import Hypothesis

PAD = 0


def normaliser(length: int, alpha: float, style: str) -> float:
    """lp(|Y|) written out again, not transformer.decoding's: |Y| = output tokens, </s> included."""
    return {"gnmt": ((5 + length) / 6) ** alpha, "average": length ** alpha}[style]


@torch.no_grad()
def reference_beam_search(model, src_row: torch.Tensor, bos: int, eos: int, k: int, alpha: float,
                          limit: int, style: str = "gnmt", banned: tuple[int, ...] = ()) -> list[Hypothesis]:
    """fairseq's rule: of the 2k best extensions (by float32 sum of log-probs), a top-k one that ends
    with </s> or at the length limit finishes; the first k others go on; done once k have finished.
    A banned token is never an extension. Returns every finished hypothesis, best first by
    sum(log p) / lp(|Y|)."""
    src = src_row[src_row != PAD][None]
    live = [([], [], 0.0)]  # (tokens, per-token log-probs, sum as float32)
    finished: list[Hypothesis] = []
    for step in range(limit):
        tgt = torch.tensor([[bos] + tokens for tokens, _, _ in live])
        logits, _ = model(src.expand(len(live), -1), tgt)
        logp = torch.log_softmax(logits[:, -1].float(), dim=-1)  # (live, vocab)
        for tok in banned:
            logp[:, tok] = float("-inf")
        vocab = logp.size(1)
        total = (torch.tensor([s for _, _, s in live])[:, None] + logp).view(-1)
        top_scores, top_ids = total.topk(min(2 * k, total.numel()))
        going, at_limit = [], step + 1 >= limit
        for rank, (score, index) in enumerate(zip(top_scores.tolist(), top_ids.tolist())):
            if score == float("-inf"):
                break  # a banned token (or nothing left): no more candidates
            beam, tok = divmod(index, vocab)
            tokens, lps, _ = live[beam]
            if tok == eos or at_limit:
                if rank < k:
                    finished.append(Hypothesis(tokens + [tok], lps + [float(logp[beam, tok])],
                                               score / normaliser(step + 1, alpha, style)))
                continue
            going.append((tokens + [tok], lps + [float(logp[beam, tok])], score))
            if len(going) == k:
                break
        if len(finished) >= k or at_limit or not going:
            break
        live = going
    return sorted(finished, key=lambda h: -h.score)
