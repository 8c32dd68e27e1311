import copy

import pytest
import torch

from transformer import Transformer
from transformer.beam import BeamSession, beam_search
from transformer.decoding import greedy_search, sample_search, score_targets
from transformer.ensemble import Ensemble
from transformer.prefix import Prefix
from transformer.sampling import Sampling

from .test_beam import BANNED, BOS, EOS, sources


def outputs(model, src):
    """Greedy, beam (n-best 2) and sampled outputs with their scores."""
    greedy = greedy_search(model, src, BOS, EOS, max_len_b=6, banned=BANNED)
    beam = beam_search(model, src, BOS, EOS, beam_size=3, n_best=2, max_len_b=6, banned=BANNED,
                       prefix=Prefix.of([[5]] * src.size(0)))
    sampled = sample_search(model, src, BOS, EOS, Sampling(top_k=0, seed=4), samples=2, max_len_b=6, banned=BANNED)
    return [[(h.tokens, h.score) for h in nbest] for nbest in [greedy, *beam, *sampled]]


def assert_same(a, b):
    for x, y in zip(a, b, strict=True):
        assert [t for t, _ in x] == [t for t, _ in y]
        assert [s for _, s in x] == pytest.approx([s for _, s in y], abs=1e-4)


@pytest.mark.parametrize("copies", [1, 2])
def test_an_ensemble_of_one_model_is_the_model(tiny_model, copies):
    src = sources(4, 6)
    alone = outputs(tiny_model, src)
    assert_same(outputs(Ensemble([tiny_model] + [copy.deepcopy(tiny_model) for _ in range(copies - 1)]), src), alone)


def test_two_models_search_the_renormalised_mean_log_probability(tiny_config):
    a, b = Transformer(tiny_config).eval(), Transformer(tiny_config).eval()
    src = sources(3, 6)
    ensemble = Ensemble([a, b])
    with torch.no_grad():
        tgt_in = torch.full((3, 1), BOS)
        mean = (torch.log_softmax(a(src, tgt_in)[0], -1) + torch.log_softmax(b(src, tgt_in)[0], -1)) / 2
        expected = torch.log_softmax(mean, -1)[:, 0]  # (3, vocab) first step
    expected[:, list(BANNED)] = float("-inf")
    first = [h.tokens[0] for h in greedy_search(ensemble, src, BOS, EOS, max_len_b=1, banned=BANNED)]
    assert first == expected.argmax(-1).tolist()
    scored = score_targets(ensemble, src, [[t] for t in first], BOS, EOS)
    for row, h, t in zip(expected, scored, first):
        assert h.token_logprobs[0] == pytest.approx(float(row[t]), abs=1e-5)


def test_sentences_join_an_ensemble_session(tiny_config):
    ensemble = Ensemble([Transformer(tiny_config).eval(), Transformer(tiny_config).eval()])
    src = sources(3, 6)
    alone = [n[0].tokens for n in beam_search(ensemble, src, BOS, EOS, beam_size=3, max_len_b=6, banned=BANNED)]
    session = BeamSession(ensemble, BOS, EOS, beam_size=3, max_len_b=6, banned=BANNED)
    session.admit(src[:1], [0])
    done = dict(session.step())
    session.admit(src[1:], [1, 2])
    while session.live:
        done.update(session.step())
    assert [done[i][0].tokens for i in range(3)] == alone


def test_the_ensemble_has_the_shortest_members_positions(tiny_config):
    from dataclasses import replace

    short = Transformer(replace(tiny_config, max_len=20)).eval()
    assert Ensemble([Transformer(tiny_config).eval(), short]).config.max_len == 20
