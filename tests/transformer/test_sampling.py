import math

import pytest
import torch

from transformer.decoding import greedy_search, sample_search
from transformer.errors import ParamError
from transformer.sampling import Sampling, uniform

from .test_beam import BANNED, BOS, EOS, PAD, sources


@torch.no_grad()
def first_token_logp(model, src_row):
    """The model's log p of the first output token (the banned ids -inf), (vocab,)."""
    src = src_row[src_row != PAD][None]
    logits, _ = model(src, torch.tensor([[BOS]]))
    logp = torch.log_softmax(logits[0, 0].double(), -1)
    logp[list(BANNED)] = float("-inf")
    return logp


def first_tokens(model, src_row, sampling, n):
    """n samples of the first output token of one sentence."""
    hyps = sample_search(model, src_row[None], BOS, EOS, sampling, samples=n, max_len_a=0.0, max_len_b=1,
                         banned=BANNED)[0]
    return torch.tensor([h.tokens[0] for h in hyps])


def test_top_k_one_is_greedy(tiny_model):
    src = sources(6, 7)
    greedy = greedy_search(tiny_model, src, BOS, EOS, max_len_b=8, banned=BANNED)
    sampled = sample_search(tiny_model, src, BOS, EOS, Sampling(top_k=1, seed=3), samples=2, max_len_b=8,
                            banned=BANNED)
    for g, draws in zip(greedy, sampled):
        assert all(d.tokens == g.tokens for d in draws)


def test_same_seed_same_draws_in_any_batch_and_order(tiny_model):
    src = sources(6, 7)
    s = Sampling(top_k=0, seed=11)
    together = sample_search(tiny_model, src, BOS, EOS, s, samples=3, max_len_b=8, banned=BANNED)
    again = sample_search(tiny_model, src, BOS, EOS, s, samples=3, max_len_b=8, banned=BANNED)
    assert [[h.tokens for h in n] for n in together] == [[h.tokens for h in n] for n in again]
    reversed_ = sample_search(tiny_model, src.flip(0), BOS, EOS, s, samples=3, max_len_b=8, banned=BANNED)[::-1]
    alone = [sample_search(tiny_model, src[i:i + 1], BOS, EOS, s, samples=3, max_len_b=8, banned=BANNED)[0]
             for i in range(len(src))]
    for a, b, c in zip(together, reversed_, alone):
        assert [h.tokens for h in a] == [h.tokens for h in b] == [h.tokens for h in c]
    other = sample_search(tiny_model, src, BOS, EOS, Sampling(top_k=0, seed=12), samples=3, max_len_b=8,
                          banned=BANNED)
    assert [[h.tokens for h in n] for n in other] != [[h.tokens for h in n] for n in together]


def test_samples_scores_are_the_model_logprobs_best_first(tiny_model):
    src = sources(3, 6)
    for nbest in sample_search(tiny_model, src, BOS, EOS, Sampling(top_k=0, seed=1), samples=5, max_len_b=6,
                               banned=BANNED):
        assert [h.score for h in nbest] == sorted((h.score for h in nbest), reverse=True)
        for h in nbest:
            assert h.score == pytest.approx(sum(h.token_logprobs))
            assert not set(h.tokens) & set(BANNED)


def test_full_distribution_draws_follow_the_model(tiny_model):
    """top-p 1, temperature 1: the first token's frequencies over 6,000 draws fit the model's softmax
    (Pearson's chi-square far below the 0.1% critical value), and no banned token is ever drawn."""
    src = sources(1, 6)[0]
    p = first_token_logp(tiny_model, src).exp()
    n = 6000
    counts = torch.bincount(first_tokens(tiny_model, src, Sampling(top_k=0, top_p=1.0, seed=5), n),
                            minlength=p.numel()).double()
    allowed = p > 0
    assert counts[~allowed].sum() == 0
    expected = n * p[allowed]
    chi2 = float(((counts[allowed] - expected) ** 2 / expected).sum())
    df = int(allowed.sum()) - 1
    critical = df + 3.09 * math.sqrt(2 * df) + 3  # ~ the 0.1% point for df near 20 (45.3 at df=20)
    assert chi2 < critical, (chi2, df)


def test_top_k_and_top_p_draw_only_inside_their_sets(tiny_model):
    src = sources(1, 6)[0]
    logp = first_token_logp(tiny_model, src)
    top3 = set(logp.topk(3).indices.tolist())
    drawn = set(first_tokens(tiny_model, src, Sampling(top_k=3, seed=2), 500).tolist())
    assert drawn <= top3 and len(drawn) > 1
    probs, order = logp.exp().sort(descending=True)
    nucleus = set(order[: int((probs.cumsum(0) < 0.5).sum()) + 1].tolist())  # smallest set reaching 0.5
    drawn = set(first_tokens(tiny_model, src, Sampling(top_k=0, top_p=0.5, seed=2), 500).tolist())
    assert drawn <= nucleus


def test_low_temperature_is_greedy_high_spreads(tiny_model):
    src = sources(1, 6)[0]
    best = int(first_token_logp(tiny_model, src).argmax())
    assert set(first_tokens(tiny_model, src, Sampling(top_k=0, temperature=0.01, seed=4), 300).tolist()) == {best}
    spread = lambda t: len(set(first_tokens(tiny_model, src, Sampling(top_k=0, temperature=t, seed=4), 300)  # noqa: E731
                               .tolist()))
    assert spread(3.0) >= spread(1.0) > 1


def test_uniform_noise_is_in_range_and_spread():
    keys = torch.arange(64, dtype=torch.int64) * 7919
    u = uniform(keys, 3, 1000)
    assert u.shape == (64, 1000) and bool((u > 0).all()) and bool((u < 1).all())
    assert float(u.mean()) == pytest.approx(0.5, abs=0.01)
    assert torch.equal(u, uniform(keys, 3, 1000))
    assert not torch.equal(u, uniform(keys, 4, 1000))
    assert len({tuple(r[:8].tolist()) for r in u}) == 64


@pytest.mark.parametrize("bad", [dict(top_k=-1), dict(top_p=0.0), dict(top_p=1.5), dict(temperature=0.0),
                                 dict(seed=-1)])
def test_bad_sampling_values_are_named(bad):
    with pytest.raises(ParamError) as e:
        Sampling(**bad)
    name = {"top_k": "sampling_topk", "top_p": "sampling_topp"}.get(next(iter(bad)), next(iter(bad)))
    assert name in str(e.value)
