"""Batched beam search over the key/value cache, with a length penalty (GNMT or average) and n-best lists.

Every live prefix of every sentence advances in one tensor step: the 2k best extensions of each
sentence, of which a top-k one that ends (</s> or the length limit) finishes and the first k that do
not end go on. Python touches only the hypotheses that finish. The beams of a sentence share one row
of the encoder memory (the cache folds them into its cross-attention queries), so the memory is
never copied per beam nor reordered at each step.

Compared with Hugging Face transformers' beam search (5.24, `GenerationMixin._beam_search`): the same
2k candidates by sum(log p), of which only a top-k one may finish, and with length_style="average"
the same ranking of finished hypotheses (sum(log p) / |Y|^alpha, |Y| the tokens after the start
token, </s> included). Our stopping rule is its early_stopping=True: a sentence is done once k
hypotheses have finished. Its default early_stopping=False goes on while the best live prefix,
divided by its current length^alpha, beats the worst of the k finished (a later hypothesis may
replace one of them); "never" divides by the maximum length instead when alpha > 0. NOTES.md.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable

import torch
from torch.nn import functional as F

from transformer.cache import DecoderCache
from transformer.decoding import Hypothesis, check_length_style, length_penalty, next_token_logprobs, output_limits
from transformer.model import Transformer


@torch.no_grad()
def beam_search(model: Transformer, src: torch.Tensor, bos_id: int, eos_id: int, beam_size: int = 5,
                n_best: int = 1, alpha: float = 0.6, max_len_a: float = 1.5, max_len_b: int = 10,
                trace: Callable[["StepTrace"], None] | None = None, *, length_style: str = "gnmt",
                banned: tuple[int, ...] = ()) -> list[list[Hypothesis]]:
    """Keep the beam_size best prefixes of every sentence; a sentence is done once beam_size
    hypotheses have ended with </s> (or its length limit is reached). Finished sentences leave the
    batch. Ranked by sum(log p) / lp(|Y|) (length_penalty with alpha and length_style); returns the
    n_best best per sentence, best first. No hypothesis contains a `banned` id (log p = -inf).
    trace, when given, sees every step's candidates (explain's beam-search trace)."""
    if not 1 <= n_best <= beam_size:
        raise ValueError(f"n_best ({n_best}) must be between 1 and beam_size ({beam_size})")
    check_length_style(length_style)
    k, device = beam_size, src.device
    limits = output_limits(src, model.config.pad_id, max_len_a, max_len_b, model.config.max_len)  # (batch,)
    cache, _ = model.encode(src)  # one memory row per sentence
    finished: list[list[Hypothesis]] = [[] for _ in range(src.size(0))]
    search = _Search(k, eos_id, (alpha, length_style), torch.arange(src.size(0), device=device), limits, trace)
    last = torch.full((src.size(0), 1), bos_id, dtype=torch.long, device=device)  # one prefix (<s>) each
    for step in itertools.count():
        logits, _, _ = model.decode(last, cache)  # (sentences * width, 1, vocab)
        last = search.advance(next_token_logprobs(logits, banned), step, cache, finished)
        if last is None:
            break
    return [sorted(f, key=lambda h: -h.score)[:n_best] for f in finished]


@dataclass(frozen=True)
class StepTrace:
    """One step of the search, for the sentences still searching (row i = sentence sentences[i])."""

    step: int  # 0-based: the candidates end at output position step + 1
    sentences: list[int]
    prefixes: list[list[list[int]]]  # [sentence row][beam] the live prefixes' tokens
    candidates: list[list[tuple[int, int, float, float, str]]]  # [row]: (beam, token, log p, sum, status)
    # status: "kept" (goes on), "finished" (ended with </s> or at the limit), "pruned" (not among the kept)


class _Search:
    """The live prefixes of the sentences still searching: `width` rows per sentence (1 before the
    first step, then k), row i * width + b being beam b of sentence i."""

    def __init__(self, k: int, eos_id: int, penalty: tuple[float, str], sentences: torch.Tensor,
                 limits: torch.Tensor, trace: Callable[[StepTrace], None] | None = None) -> None:
        self.k, self.eos_id, self.penalty, self.trace = k, eos_id, penalty, trace  # penalty: (alpha, style)
        self.sentences = sentences  # (n,) original index of each sentence still searching
        self.limits = limits  # (batch,) output length limit of every sentence
        self.scores = torch.zeros(sentences.numel(), 1, device=sentences.device)  # (n, width) sum log p
        self.tokens = torch.empty(sentences.numel(), 0, dtype=torch.long, device=sentences.device)  # (rows, t)
        self.logps = torch.empty(sentences.numel(), 0, device=sentences.device)  # (rows, t) per token
        self.n_finished = torch.zeros(sentences.numel(), dtype=torch.long, device=sentences.device)  # (n,)

    def advance(self, logp: torch.Tensor, step: int, cache: DecoderCache,
                finished: list[list[Hypothesis]]) -> torch.Tensor | None:
        """logp: (n * width, vocab) log-probs of the next token. Records the hypotheses that finish,
        keeps the k best that go on (reordering the cache), and returns their last tokens (n' * k, 1),
        or None when every sentence is done."""
        n, width = self.scores.shape
        # The 2k best extensions of a sentence are among the 2k best tokens of each of its prefixes
        # (a prefix adds one score to all its tokens), so only those are summed and ranked.
        row_lp, row_tok = _top(logp, 2 * self.k)  # (n * width, 2k)
        total = (self.scores.view(-1, 1) + row_lp).view(n, -1)  # (n, width * 2k)
        top_scores, top_ids = _top(total, 2 * self.k)  # (n, 2k) best first: enough to keep k without </s>
        beam = top_ids // row_lp.size(1)
        tok = row_tok.view(n, -1).gather(1, top_ids)
        tok_lp = row_lp.view(n, -1).gather(1, top_ids)  # log p of each candidate's new token
        at_limit = step + 1 >= self.limits[self.sentences]  # (n,)
        ends = (tok == self.eos_id) | at_limit[:, None]
        alive = top_scores > float("-inf")
        rank = torch.arange(top_ids.size(1), device=logp.device)
        finishing = ends & alive & (rank < self.k)  # only a top-k candidate may finish, as in fairseq
        going = ~ends & alive
        if finishing.any():
            self._finish(finishing, beam, tok, top_scores, tok_lp, width, step, finished)
        done = (self.n_finished >= self.k) | at_limit | ~going.any(dim=1)
        picked = going & (going.cumsum(dim=1) <= self.k)  # the first k that go on
        if self.trace is not None:
            self._report(step, width, beam, tok, tok_lp, top_scores, alive, finishing, picked)
        if bool(done.all()):
            return None
        order = (~picked).to(torch.uint8).argsort(dim=1, stable=True)[:, : self.k]  # picked first, by rank
        rows = torch.arange(n, device=logp.device)[:, None] * width + beam.gather(1, order)  # (n, k)
        scores = top_scores.gather(1, order).masked_fill(~picked.gather(1, order), float("-inf"))  # dead beams
        new_tok, new_lp = tok.gather(1, order), tok_lp.gather(1, order)
        stay = None
        if bool(done.any()):
            stay = (~done).nonzero().squeeze(1)  # (n',) the sentences that go on
            rows, scores, new_tok, new_lp = rows[stay], scores[stay], new_tok[stay], new_lp[stay]
            self.sentences, self.n_finished = self.sentences[stay], self.n_finished[stay]
        rows = rows.reshape(-1)  # (n' * k,) the decoder row each kept prefix extends
        self.tokens = torch.cat([self.tokens.index_select(0, rows), new_tok.reshape(-1, 1)], dim=1)
        self.logps = torch.cat([self.logps.index_select(0, rows), new_lp.reshape(-1, 1)], dim=1)
        self.scores = scores
        cache.reorder(rows, stay)
        return new_tok.reshape(-1, 1)

    def _report(self, step: int, width: int, beam, tok, tok_lp, scores, alive, finishing, picked) -> None:
        status = [["finished" if f else "kept" if p else "pruned" for f, p, a in zip(fr, pr, ar) if a]
                  for fr, pr, ar in zip(finishing.tolist(), picked.tolist(), alive.tolist())]
        rows = [list(zip(*cols)) for cols in zip(beam.tolist(), tok.tolist(), tok_lp.tolist(), scores.tolist(), status)]
        self.trace(StepTrace(step, self.sentences.tolist(), self.tokens.view(len(rows), width, -1).tolist(), rows))

    def _finish(self, finishing: torch.Tensor, beam: torch.Tensor, tok: torch.Tensor, scores: torch.Tensor,
                tok_lp: torch.Tensor, width: int, step: int, finished: list[list[Hypothesis]]) -> None:
        """Record the candidates in `finishing` ((n, 2k) bool) as hypotheses of length step + 1."""
        self.n_finished += finishing.sum(dim=1)
        where = finishing.nonzero()  # (m, 2) (sentence row, rank), sentence by sentence, best first
        rows = where[:, 0] * width + beam[finishing]
        prefixes, prefix_lps = self.tokens[rows].tolist(), self.logps[rows].tolist()
        lp = length_penalty(step + 1, *self.penalty)
        for s, prefix, prefix_lp, t, t_lp, score in zip(
                self.sentences[where[:, 0]].tolist(), prefixes, prefix_lps, tok[finishing].tolist(),
                tok_lp[finishing].tolist(), scores[finishing].tolist()):
            finished[s].append(Hypothesis(prefix + [t], prefix_lp + [t_lp], score / lp))


def _top(total: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """topk over each row, padded with -inf candidates when a row has fewer than count entries."""
    scores, ids = total.topk(min(count, total.size(1)), dim=1)
    missing = count - scores.size(1)
    if missing > 0:  # a vocabulary smaller than 2k: the extra candidates are dead
        scores = F.pad(scores, (0, missing), value=float("-inf"))
        ids = F.pad(ids, (0, missing), value=0)
    return scores, ids
