import math

import pytest
import torch

from transformer.beam import BeamSession, beam_search
from transformer.coverage import coverage_penalty
from transformer.errors import ParamError

from .reference_beam import normaliser
from .test_beam import BANNED, BOS, EOS, PAD, run_session, sources, teacher_forced_logprob


@torch.no_grad()
def teacher_forced_coverage(model, src_row, tokens):
    """sum over the output positions of the last decoder layer's cross-attention (mean of heads),
    per real source token: what GNMT's sum_j p_ij is for this hypothesis."""
    src = src_row[src_row != PAD][None]
    _, maps = model(src, torch.tensor([[BOS] + tokens[:-1]]), return_attention=True)
    return maps.cross[-1].weights[0].double().mean(0).sum(0)  # (src_len,)


def gnmt_cp(coverage, beta):
    return beta * float(sum(math.log(min(max(c, 1e-20), 1.0)) for c in coverage.tolist()))


def test_penalty_formula_counts_only_real_tokens():
    coverage = torch.tensor([[0.5, 1.7, 0.0], [1.0, 2.0, 0.0], [0.0, 0.25, 0.0]])
    real = torch.tensor([[True, True, False], [True, True, False], [True, True, True]])
    cp = coverage_penalty(coverage, real, 0.4)
    assert cp[0] == pytest.approx(0.4 * math.log(0.5))
    assert cp[1] == 0.0, "every real token attended at least once in total: no penalty"
    assert torch.isfinite(cp[2]) and cp[2] < cp[0], "a token never attended costs much, but stays finite"
    assert (coverage_penalty(coverage, real, 0.0) == 0).all()


@pytest.mark.parametrize("style", ["gnmt", "average"])
def test_scores_are_gnmt_with_the_hypothesis_own_coverage(tiny_model, style):
    """score = log P / lp + beta * sum_i log(min(coverage_i, 1)), the coverage summed over every
    output step (its </s> included) as teacher forcing the hypothesis computes it."""
    torch.manual_seed(0)
    src = sources(4, 7)
    beta = 0.7
    results = beam_search(tiny_model, src, BOS, EOS, beam_size=4, n_best=4, alpha=0.8, max_len_b=5,
                          length_style=style, banned=BANNED, coverage_beta=beta)
    penalised = 0
    for i, nbest in enumerate(results):
        assert [h.score for h in nbest] == sorted((h.score for h in nbest), reverse=True)
        for h in nbest:
            logprob = teacher_forced_logprob(tiny_model, src[i], h.tokens)
            cp = gnmt_cp(teacher_forced_coverage(tiny_model, src[i], h.tokens), beta)
            penalised += cp < 0
            assert h.score == pytest.approx(logprob / normaliser(len(h.tokens), 0.8, style) + cp, abs=1e-4)
    assert penalised, "some hypothesis of this random model leaves a source token under-attended"


def test_the_penalty_prefers_the_better_covering_hypothesis(tiny_model):
    """The search is the same and only the ranking of its finished hypotheses changes, so the best
    under the penalty covers the source at least as well as the best without it."""
    torch.manual_seed(1)
    src = sources(8, 9)
    plain = beam_search(tiny_model, src, BOS, EOS, beam_size=4, max_len_b=8, banned=BANNED)
    covered = beam_search(tiny_model, src, BOS, EOS, beam_size=4, max_len_b=8, banned=BANNED, coverage_beta=5.0)
    changed = 0
    for i, (a, b) in enumerate(zip(plain, covered)):
        cov_a = gnmt_cp(teacher_forced_coverage(tiny_model, src[i], a[0].tokens), 1.0)
        cov_b = gnmt_cp(teacher_forced_coverage(tiny_model, src[i], b[0].tokens), 1.0)
        assert cov_b >= cov_a - 1e-5
        changed += a[0].tokens != b[0].tokens
    assert changed, "a large beta re-ranks at least one sentence of this random model"


def test_batch_invariant_and_equal_for_sentences_that_join_a_running_search(tiny_model):
    """Padding columns never count, and the coverage of sentences admitted between steps (whose
    source may be wider or narrower than the batch's) is their own."""
    torch.manual_seed(2)
    src = sources(9, 9)
    options = dict(beam_size=3, n_best=3, alpha=0.6, max_len_b=6)
    alone = [beam_search(tiny_model, src[i:i + 1, : int((src[i] != PAD).sum())], BOS, EOS, coverage_beta=0.5,
                         **options)[0] for i in range(9)]
    batched = beam_search(tiny_model, src, BOS, EOS, coverage_beta=0.5, **options)
    session = BeamSession(tiny_model, BOS, EOS, 3, 3, 0.6, max_len_b=6, coverage_beta=0.5)
    got, _ = run_session(session, src, {0: [0, 1], 1: [2], 2: [3, 4], 4: [5], 7: [6, 7, 8]})
    for i in range(9):
        for other in (batched[i], got[i]):
            assert [h.tokens for h in other] == [h.tokens for h in alone[i]], i
            assert [h.score for h in other] == pytest.approx([h.score for h in alone[i]], abs=1e-4)


@pytest.mark.parametrize("beta", [-0.1, 11.0, float("nan")])
def test_beta_out_of_range_is_refused_by_name(tiny_model, beta):
    with pytest.raises(ParamError, match="coverage_penalty"):
        BeamSession(tiny_model, BOS, EOS, 3, coverage_beta=beta)
