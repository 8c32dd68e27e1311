import pytest
import torch

from transformer.beam import beam_search
from transformer.decoding import greedy_search
from transformer.errors import ParamError
from transformer.penalties import History, Penalties

from .test_beam import BANNED, BOS, EOS, sources


def ngrams(tokens, n):
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def repeats(tokens, n):
    grams = ngrams(tokens, n)
    return len(grams) - len(set(grams))


@pytest.mark.parametrize("n", [1, 2, 3])
def test_no_output_repeats_an_ngram_greedy_and_beam(tiny_model, n):
    torch.manual_seed(0)
    src = sources(8, 9)
    rule = Penalties(no_repeat_ngram_size=n)
    plain = greedy_search(tiny_model, src, BOS, EOS, max_len_b=20, banned=BANNED)
    assert sum(repeats(h.tokens, n) for h in plain) > 0, "the random model repeats itself without the rule"
    greedy = greedy_search(tiny_model, src, BOS, EOS, max_len_b=20, banned=BANNED, penalties=rule)
    beam = beam_search(tiny_model, src, BOS, EOS, beam_size=3, n_best=3, max_len_b=20, banned=BANNED,
                       penalties=rule)
    for h in greedy + [h for nbest in beam for h in nbest]:
        assert repeats(h.tokens, n) == 0, h.tokens


def test_inactive_penalties_change_nothing(tiny_model):
    src = sources(5, 7)
    a = beam_search(tiny_model, src, BOS, EOS, beam_size=3, max_len_b=8, banned=BANNED)
    b = beam_search(tiny_model, src, BOS, EOS, beam_size=3, max_len_b=8, banned=BANNED, penalties=Penalties())
    assert [[h.tokens for h in n] for n in a] == [[h.tokens for h in n] for n in b]


def test_repetition_penalty_is_ctrl_on_the_rows_own_tokens():
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0], [2.0, -1.0, 0.5, 3.0]])
    # row 0 produced tokens 1, 3; row 1 produced only token 2 (its first column is left padding of id 1)
    history = History(torch.tensor([[1, 3], [1, 2]]), torch.tensor([2, 1]))
    out = Penalties(repetition_penalty=2.0).on_logits(logits, history)
    assert out.tolist() == [[2.0, -2.0, 0.5, 1.5], [2.0, -1.0, 0.25, 3.0]]


def test_ngram_rule_ignores_left_padding():
    # row 0's own tokens are [5, 6, 5]: after "5" comes "6" once, so 6 is banned; row 1 owns only
    # [6, 5] (its first column is padding): "5" has not been followed yet, nothing banned
    history = History(torch.tensor([[5, 6, 5], [5, 6, 5]]), torch.tensor([3, 2]))
    out = Penalties(no_repeat_ngram_size=2).on_logprobs(torch.zeros(2, 8), history)
    assert out[0, 6] == float("-inf") and torch.isfinite(out[0, :6]).all() and torch.isfinite(out[1]).all()


def test_repetition_penalty_lowers_repeats(tiny_model):
    src = sources(8, 9)
    count = lambda p: sum(repeats(h.tokens, 1) for h in greedy_search(  # noqa: E731
        tiny_model, src, BOS, EOS, max_len_b=20, banned=BANNED, penalties=Penalties(repetition_penalty=p)))
    assert count(5.0) < count(1.0)


@pytest.mark.parametrize("bad", [dict(no_repeat_ngram_size=-1), dict(repetition_penalty=0.0),
                                 dict(repetition_penalty=float("nan"))])
def test_bad_values_are_named(bad):
    with pytest.raises(ParamError, match=next(iter(bad))):
        Penalties(**bad)
