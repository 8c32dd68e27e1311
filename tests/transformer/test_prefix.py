import pytest
import torch

from transformer.beam import BeamSession, beam_search
from transformer.decoding import greedy_search, sample_search, score_targets
from transformer.prefix import Prefix
from transformer.sampling import Sampling

from .test_beam import BANNED, BOS, EOS, PAD, sources, teacher_forced_logprob

PREFIXES = [[5, 6, 7], [], [9], [4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4]]  # the last is longer than the limit


def searches(model, src, prefix):
    """Every search's best output per sentence, each given the prefix."""
    p = Prefix.of(prefix)
    return {
        "greedy": [h.tokens for h in greedy_search(model, src, BOS, EOS, max_len_b=6, banned=BANNED, prefix=p)],
        "beam": [n[0].tokens for n in beam_search(model, src, BOS, EOS, beam_size=3, max_len_b=6, banned=BANNED,
                                                   prefix=p)],
        "sampling": [n[0].tokens for n in sample_search(model, src, BOS, EOS, Sampling(top_k=0, seed=2),
                                                        samples=2, max_len_b=6, banned=BANNED, prefix=p)],
    }


def test_every_search_starts_with_the_prefix(tiny_model):
    src = sources(len(PREFIXES), 5)
    for name, outputs in searches(tiny_model, src, PREFIXES).items():
        for prefix, out in zip(PREFIXES, outputs):
            assert out[: len(prefix)] == prefix, name
            assert len(out) > len(prefix) or out[-1] == EOS, name  # the search went on after it


def test_a_prefix_the_model_would_choose_changes_nothing(tiny_model):
    src = sources(4, 6)
    free = greedy_search(tiny_model, src, BOS, EOS, max_len_b=6, banned=BANNED)
    own = [h.tokens[:2] for h in free]
    forced = greedy_search(tiny_model, src, BOS, EOS, max_len_b=6, banned=BANNED, prefix=Prefix.of(own))
    assert [h.tokens for h in forced] == [h.tokens for h in free]
    assert [h.score for h in forced] == pytest.approx([h.score for h in free], abs=1e-5)


def test_scores_count_the_prefix_as_the_model_sees_it(tiny_model):
    src = sources(3, 6)
    prefix = [[PAD, 8], [BOS], [11, 12]]  # even ids the search never chooses keep their log p
    for nbest, row in zip(beam_search(tiny_model, src, BOS, EOS, beam_size=2, n_best=2, alpha=0.0, max_len_b=5,
                                      banned=BANNED, prefix=Prefix.of(prefix)), src):
        for h in nbest:
            assert h.score == pytest.approx(teacher_forced_logprob(tiny_model, row, h.tokens), abs=1e-4)


def test_sentences_joining_a_session_keep_their_own_prefix(tiny_model):
    src = sources(3, 6)
    alone = [beam_search(tiny_model, src[i:i + 1], BOS, EOS, beam_size=3, max_len_b=6, banned=BANNED,
                         prefix=Prefix.of([PREFIXES[i]]))[0][0].tokens for i in range(3)]
    session = BeamSession(tiny_model, BOS, EOS, beam_size=3, max_len_b=6, banned=BANNED)
    session.admit(src[:1], [0], Prefix.of([PREFIXES[0]]))
    done = dict(session.step())
    session.admit(src[1:], [1, 2], Prefix.of(PREFIXES[1:3]))
    while session.live:
        done.update(session.step())
    assert [done[i][0].tokens for i in range(3)] == alone


def test_score_targets_is_the_teacher_forced_log_probability(tiny_model):
    src = sources(3, 6)
    targets = [[5, 6], [7], []]
    for h, row, t in zip(score_targets(tiny_model, src, targets, BOS, EOS), src, targets):
        assert h.tokens == t + [EOS]
        assert h.score == pytest.approx(teacher_forced_logprob(tiny_model, row, t + [EOS]), abs=1e-4)


def test_score_targets_gives_the_search_its_own_scores(tiny_model):
    src = sources(4, 6)
    for style in ("gnmt", "average"):
        found = beam_search(tiny_model, src, BOS, EOS, beam_size=3, alpha=1.0, max_len_b=6, length_style=style)
        scored = score_targets(tiny_model, src, [n[0].without_eos(EOS) for n in found], BOS, EOS, 1.0,
                               length_style=style)
        for n, s in zip(found, scored):
            if n[0].tokens[-1] == EOS:  # a hypothesis cut at the limit has no </s> to score
                assert s.score == pytest.approx(n[0].score, abs=1e-4)


def test_prefix_at_and_cat():
    p = Prefix.of([[3, 4], [], [5]])
    assert p.lengths.tolist() == [2, 0, 1]
    assert p.at(0).tolist() == [3, -1, 5]
    assert p.at(torch.tensor([1, 0, 1])).tolist() == [4, -1, -1]
    assert p.at(7).tolist() == [-1, -1, -1]
    assert Prefix.empty(2).cat(p).at(0).tolist() == [-1, -1, 3, -1, 5]
