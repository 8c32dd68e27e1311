"""Batched beam search over the key/value cache, with a length penalty (GNMT or average), GNMT's
coverage penalty (optional) and n-best lists.

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

from dataclasses import dataclass
from typing import Callable

import torch
from torch.nn import functional as F

from transformer.cache import DecoderCache
from transformer.coverage import check_beta, coverage_penalty, fit_width, step_attention
from transformer.decoding import (NO_PENALTIES, Hypothesis, check_length_style, length_penalty, next_token_logprobs,
                                 output_limits)
from transformer.penalties import History, Penalties
from transformer.prefix import Prefix
from transformer.model import Transformer


@torch.no_grad()
def beam_search(model: Transformer, src: torch.Tensor, bos_id: int, eos_id: int, beam_size: int = 5,
                n_best: int = 1, alpha: float = 0.6, max_len_a: float = 1.5, max_len_b: int = 10,
                trace: Callable[["StepTrace"], None] | None = None, *, length_style: str = "gnmt",
                banned: tuple[int, ...] = (), penalties: Penalties = NO_PENALTIES,
                prefix: Prefix | None = None, coverage_beta: float = 0.0) -> list[list[Hypothesis]]:
    """Keep the beam_size best prefixes of every sentence; a sentence is done once beam_size
    hypotheses have ended with </s> (or its length limit is reached). Finished sentences leave the
    batch. Ranked by sum(log p) / lp(|Y|) (length_penalty with alpha and length_style); returns the
    n_best best per sentence, best first. No hypothesis contains a `banned` id (log p = -inf);
    penalties (transformer/penalties.py) read each beam's own prefix; `prefix` forces each
    sentence's first tokens (transformer/prefix.py); coverage_beta > 0 adds GNMT's coverage penalty
    to the score of each finished hypothesis (transformer/coverage.py).
    trace, when given, sees every step's candidates (explain's beam-search trace)."""
    session = BeamSession(model, bos_id, eos_id, beam_size, n_best, alpha, max_len_a, max_len_b, trace,
                          length_style=length_style, banned=banned, penalties=penalties,
                          coverage_beta=coverage_beta)
    session.admit(src, list(range(src.size(0))), prefix)
    out: list[list[Hypothesis]] = [[] for _ in range(src.size(0))]
    while session.live:
        for i, nbest in session.step():
            out[i] = nbest
    return out


class BeamSession:
    """A batched beam search that sentences may join between steps and leave as soon as they are done
    (continuous batching: a server keeps the batch full instead of waiting for its longest sentence).
    beam_search() is one admit() and steps until no sentence is live.

        session = BeamSession(model, BOS, EOS, beam_size=5)
        session.admit(src, ["a", "b"])              # (2, src_len) right-padded ids
        done = session.step()                        # [(key, n-best hypotheses)] of those that ended
        session.admit(more_src, ["c"])               # joins the search at its next step
    """

    def __init__(self, model: Transformer, bos_id: int, eos_id: int, beam_size: int = 5, n_best: int = 1,
                 alpha: float = 0.6, max_len_a: float = 1.5, max_len_b: int = 10,
                 trace: Callable[["StepTrace"], None] | None = None, *, length_style: str = "gnmt",
                 banned: tuple[int, ...] = (), penalties: Penalties = NO_PENALTIES,
                 coverage_beta: float = 0.0) -> None:
        if not 1 <= n_best <= beam_size:
            raise ValueError(f"n_best ({n_best}) must be between 1 and beam_size ({beam_size})")
        check_length_style(length_style)
        check_beta(coverage_beta)
        self.model, self.bos_id, self.n_best, self.banned = model, bos_id, n_best, banned
        self.penalties = penalties
        self.limits_ab = (max_len_a, max_len_b)
        self.search = _Search(beam_size, eos_id, (alpha, length_style), trace, coverage_beta)
        self.cache: DecoderCache | None = None
        self.last: torch.Tensor | None = None  # (rows, 1) the token each row reads next
        self.step_count = 0

    @property
    def live(self) -> int:
        """Sentences still searching."""
        return len(self.search.keys)

    @torch.no_grad()
    def admit(self, src: torch.Tensor, keys: list, prefix: Prefix | None = None) -> None:
        """Sentences src (batch, src_len), named by `keys`, join the search at the next step; prefix:
        their forced first tokens."""
        prefix = prefix if prefix is not None else Prefix.empty(src.size(0), src.device)
        limits = output_limits(src, self.model.config.pad_id, *self.limits_ab, self.model.config.max_len, prefix)
        cache, _ = self.model.encode(src)  # one memory row per sentence
        fresh = self.cache is None or not self.live
        if fresh:
            self.search = self.search.restarted()
        width = self.search.width  # 1 before the first step, then beam_size (the new beams but one dead)
        first = torch.full((src.size(0) * width, 1), self.bos_id, dtype=torch.long, device=src.device)
        if fresh:
            self.cache, self.last = cache, first
        else:
            self.cache.admit(cache, width, self.last.size(0))
            self.last = torch.cat([self.last, first])
        self.search.add(keys, limits, prefix)

    @torch.no_grad()
    def step(self) -> list[tuple[object, list[Hypothesis]]]:
        """One decoding step of every live row; returns (key, n-best, best first) of the sentences
        that are done after it."""
        need_weights = self.search.beta > 0  # the coverage penalty reads the last layer's cross-attention
        logits, _, cross = self.model.decode(self.last, self.cache, need_weights)  # (sentences * width, 1, vocab)
        done: dict = {}
        history = self.search.history() if self.penalties.active else None
        logp = next_token_logprobs(logits, self.banned, self.penalties, history, self.search.forced())
        attention = step_attention(cross[-1]) if need_weights else None
        self.last = self.search.advance(logp, self.step_count, self.cache, done, attention)
        self.step_count += 1
        if self.last is not None and self.cache.starts is not None:
            self.cache.compact()
        return [(key, sorted(hyps, key=lambda h: -h.score)[: self.n_best]) for key, hyps in done.items()]


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
    first step, then k), row i * width + b being beam b of sentence i. Sentences added later have
    fewer tokens: their rows of `tokens` are left-padded, and `steps` counts each one's own."""

    def __init__(self, k: int, eos_id: int, penalty: tuple[float, str],
                 trace: Callable[[StepTrace], None] | None = None, beta: float = 0.0) -> None:
        self.k, self.eos_id, self.penalty, self.trace = k, eos_id, penalty, trace  # penalty: (alpha, style)
        self.beta = beta  # the coverage penalty's weight (0: off)
        self.coverage: torch.Tensor | None = None  # (rows, src_len) attention each source token has had
        self.keys: list = []  # (n,) the key of each sentence still searching
        self.width = 1
        self.limits = torch.empty(0, dtype=torch.long)  # (n,) output length limit of each sentence
        self.steps = torch.empty(0, dtype=torch.long)  # (n,) tokens each sentence has produced
        self.scores = torch.zeros(0, 1)  # (n, width) sum log p
        self.tokens = torch.empty(0, 0, dtype=torch.long)  # (rows, t) per row, left-padded
        self.logps = torch.empty(0, 0)  # (rows, t) log p of each token
        self.n_finished = torch.empty(0, dtype=torch.long)  # (n,)
        self.prefix = Prefix.empty(0)  # each sentence's forced first tokens
        self.finished: dict = {}  # key -> the Hypotheses of a live sentence that have ended

    def restarted(self) -> "_Search":
        return _Search(self.k, self.eos_id, self.penalty, self.trace, self.beta)

    def add(self, keys: list, limits: torch.Tensor, prefix: Prefix) -> None:
        """New sentences with `width` rows each (beam 0 alive at score 0, the others dead)."""
        n, width, device = len(keys), self.width, limits.device
        scores = torch.full((n, width), float("-inf"), device=device)
        scores[:, 0] = 0.0
        rows, t = n * width, self.tokens.size(1)
        self.keys += list(keys)
        self.limits = torch.cat([self.limits.to(device), limits])
        self.steps = torch.cat([self.steps.to(device), torch.zeros(n, dtype=torch.long, device=device)])
        self.n_finished = torch.cat([self.n_finished.to(device), torch.zeros(n, dtype=torch.long, device=device)])
        self.scores = torch.cat([self.scores.to(device), scores])
        self.tokens = torch.cat([self.tokens.to(device), torch.zeros(rows, t, dtype=torch.long, device=device)])
        self.logps = torch.cat([self.logps.to(device), torch.zeros(rows, t, device=device)])
        if self.coverage is not None:
            self.coverage = torch.cat([self.coverage, self.coverage.new_zeros(rows, self.coverage.size(1))])
        self.prefix = Prefix(self.prefix.tokens.to(device)).cat(prefix)
        self.finished.update({key: [] for key in keys})

    def advance(self, logp: torch.Tensor, step: int, cache: DecoderCache, done: dict,
                attention: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor | None:
        """logp: (n * width, vocab) log-probs of the next token. Records the hypotheses that finish,
        moves the sentences that are done into `done` (key -> hypotheses), keeps the k best that go
        on (reordering the cache), and returns their last tokens (n' * k, 1), or None when every
        sentence is done. attention: this step's cross-attention of each row and its real source
        tokens ((n * width, src_len) each, coverage.step_attention), given when the coverage penalty is on."""
        n, width = self.scores.shape
        top_scores, beam, tok, tok_lp = self._candidates(logp)
        at_limit = self.steps + 1 >= self.limits  # (n,)
        ends = (tok == self.eos_id) | at_limit[:, None]
        alive = top_scores > float("-inf")
        rank = torch.arange(tok.size(1), device=logp.device)
        finishing = ends & alive & (rank < self.k)  # only a top-k candidate may finish, as in fairseq
        going = ~ends & alive
        coverage, bonus = self._covered(attention)  # (n * width, src_len), (n * width,) cp of each row
        if finishing.any():
            self._finish(finishing, beam, tok, top_scores, tok_lp, width, bonus)
        ended = (self.n_finished >= self.k) | at_limit | ~going.any(dim=1)
        picked = going & (going.cumsum(dim=1) <= self.k)  # the first k that go on
        if self.trace is not None:
            self._report(step, width, beam, tok, tok_lp, top_scores, alive, finishing, picked)
        for i in ended.nonzero().squeeze(1).tolist():
            done[self.keys[i]] = self.finished.pop(self.keys[i])
        if bool(ended.all()):
            self.keys = []
            return None
        order = (~picked).to(torch.uint8).argsort(dim=1, stable=True)[:, : self.k]  # picked first, by rank
        rows = torch.arange(n, device=logp.device)[:, None] * width + beam.gather(1, order)  # (n, k)
        scores = top_scores.gather(1, order).masked_fill(~picked.gather(1, order), float("-inf"))  # dead beams
        new_tok, new_lp = tok.gather(1, order), tok_lp.gather(1, order)
        stay = None
        if bool(ended.any()):
            stay = (~ended).nonzero().squeeze(1)  # (n',) the sentences that go on
            rows, scores, new_tok, new_lp = rows[stay], scores[stay], new_tok[stay], new_lp[stay]
            self.keys = [self.keys[i] for i in stay.tolist()]
            self.limits, self.steps, self.n_finished = self.limits[stay], self.steps[stay], self.n_finished[stay]
            self.prefix = self.prefix.select(stay)
        rows = rows.reshape(-1)  # (n' * k,) the decoder row each kept prefix extends
        self.tokens = torch.cat([self.tokens.index_select(0, rows), new_tok.reshape(-1, 1)], dim=1)
        self.logps = torch.cat([self.logps.index_select(0, rows), new_lp.reshape(-1, 1)], dim=1)
        self.scores, self.width, self.steps = scores, self.k, self.steps + 1
        if coverage is not None:
            self.coverage = coverage.index_select(0, rows)
        self._trim()
        cache.reorder(rows, stay)
        return new_tok.reshape(-1, 1)

    def _candidates(self, logp: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The 2k best extensions of each sentence, best first (enough to keep k without </s>): their
        total scores, the beam each extends, the new token and its log p, each (n, 2k). They are among
        the 2k best tokens of each prefix (a prefix adds one score to all its tokens), so only those
        are summed and ranked."""
        n = self.scores.size(0)
        row_lp, row_tok = top_of_rows(logp, 2 * self.k)  # (n * width, 2k)
        total = (self.scores.view(-1, 1) + row_lp).view(n, -1)  # (n, width * 2k)
        top_scores, top_ids = _top(total, 2 * self.k)  # (n, 2k)
        beam = top_ids // row_lp.size(1)
        return top_scores, beam, row_tok.view(n, -1).gather(1, top_ids), row_lp.view(n, -1).gather(1, top_ids)

    def _covered(self, attention: tuple[torch.Tensor, torch.Tensor] | None
                 ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Each row's coverage with this step's attention added, and its coverage penalty (the cp of
        the candidates that extend it); (None, None) when the penalty is off."""
        if attention is None:
            return None, None
        weights, real = attention
        past = self.coverage if self.coverage is not None else torch.zeros_like(weights)
        coverage = fit_width(past, weights.size(1)) + weights
        return coverage, coverage_penalty(coverage, real, self.beta)

    def forced(self) -> torch.Tensor | None:
        """(rows,) the token each row must produce next (its sentence's prefix), None when no
        sentence has a prefix left."""
        if self.prefix.tokens.size(1) == 0 or not bool((self.steps < self.prefix.lengths).any()):
            return None
        return self.prefix.at(self.steps).repeat_interleave(self.width)

    def history(self) -> History:
        """Each row's own prefix (for the penalties)."""
        return History(self.tokens, self.steps.repeat_interleave(self.width))

    def _trim(self) -> None:
        """Drop the token columns that only pad (before the oldest live sentence's first token)."""
        drop = self.tokens.size(1) - int(self.steps.max())
        if drop > 0:
            self.tokens, self.logps = self.tokens[:, drop:], self.logps[:, drop:]

    def _report(self, step: int, width: int, beam, tok, tok_lp, scores, alive, finishing, picked) -> None:
        status = [["finished" if f else "kept" if p else "pruned" for f, p, a in zip(fr, pr, ar) if a]
                  for fr, pr, ar in zip(finishing.tolist(), picked.tolist(), alive.tolist())]
        rows = [list(zip(*cols)) for cols in zip(beam.tolist(), tok.tolist(), tok_lp.tolist(), scores.tolist(), status)]
        self.trace(StepTrace(step, list(self.keys), self.tokens.view(len(rows), width, -1).tolist(), rows))

    def _finish(self, finishing: torch.Tensor, beam: torch.Tensor, tok: torch.Tensor, scores: torch.Tensor,
                tok_lp: torch.Tensor, width: int, bonus: torch.Tensor | None) -> None:
        """Record the candidates in `finishing` ((n, 2k) bool) as hypotheses of their sentence's
        length (its steps + 1); bonus: (n * width,) the coverage penalty of each row, None when off."""
        self.n_finished += finishing.sum(dim=1)
        where = finishing.nonzero()  # (m, 2) (sentence row, rank), sentence by sentence, best first
        rows = where[:, 0] * width + beam[finishing]
        prefixes, prefix_lps = self.tokens[rows].tolist(), self.logps[rows].tolist()
        t = self.tokens.size(1)
        cps = bonus[rows].tolist() if bonus is not None else [0.0] * len(prefixes)
        for s, prefix, prefix_lp, token, t_lp, score, cp in zip(
                where[:, 0].tolist(), prefixes, prefix_lps, tok[finishing].tolist(), tok_lp[finishing].tolist(),
                scores[finishing].tolist(), cps):
            length = int(self.steps[s])  # this sentence's own tokens are the last `length` of its row
            hypothesis = Hypothesis(prefix[t - length:] + [token], prefix_lp[t - length:] + [t_lp],
                                    score / length_penalty(length + 1, *self.penalty) + cp)
            self.finished[self.keys[s]].append(hypothesis)


GROUP = 8  # top_of_rows: columns per group


def top_of_rows(x: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The `count` largest entries of each row of x (rows, vocab) and their columns, best first: the
    values of _top(x, count); only the columns of equal values may be others. Over a wide row it
    looks at the groups holding the largest entries only: the columns fall into strided groups
    {j, j + w, j + 2w, ...} (w = vocab // GROUP), and the `count` groups with the largest maxima
    hold `count` largest entries (were an entry among them in another group, that group's maximum
    would be below `count` maxima each at least as large, so it ties the last). One pass of maxima
    (contiguous, vectorised) and a top-k over vocab / GROUP columns instead of a top-k over every
    column: 1.3-2x faster for beam search's (rows, 8,000) log-probs (bench/RESULTS.md)."""
    rows, vocab = x.shape
    w = vocab // GROUP  # (rows, GROUP, w): group j is column j of every slice of w
    if w < 16 * count:
        return _top(x, count)
    groups = x[:, : w * GROUP].view(rows, GROUP, w).amax(dim=1).topk(count, dim=1).indices  # (rows, count)
    columns = (groups[:, None, :] + torch.arange(0, w * GROUP, w, device=x.device)[None, :, None]).view(rows, -1)
    if w * GROUP < vocab:  # the last vocab % GROUP columns are candidates too
        tail = torch.arange(w * GROUP, vocab, device=x.device).expand(rows, -1)
        columns = torch.cat([columns, tail], dim=1)
    values, picked = x.gather(1, columns).topk(count, dim=1)  # (rows, count) of the GROUP * count (+ tail)
    return values, columns.gather(1, picked)


def _top(total: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """topk over each row, padded with -inf candidates when a row has fewer than count entries."""
    scores, ids = total.topk(min(count, total.size(1)), dim=1)
    missing = count - scores.size(1)
    if missing > 0:  # a vocabulary smaller than 2k: the extra candidates are dead
        scores = F.pad(scores, (0, missing), value=float("-inf"))
        ids = F.pad(ids, (0, missing), value=0)
    return scores, ids
