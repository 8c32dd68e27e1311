import pytest
import torch

from transformer.beam import GROUP, BeamSession, beam_search, length_penalty, top_of_rows
from transformer.decoding import greedy_search, output_limits
from transformer.errors import ParamError
from transformer.config import ModelConfig
from transformer.model import Transformer

from .reference_beam import normaliser, reference_beam_search

BOS, EOS, PAD = 1, 2, 0
BANNED = (PAD, BOS)  # what Translator.search bans (data.tokenizer's ids differ from this tiny model's)


def sources(n, length, vocab=23):
    src = torch.randint(3, vocab, (n, length))
    for i in range(n):
        cut = int(torch.randint(2, length + 1, (1,)))
        src[i, cut:] = PAD
    return src


@torch.no_grad()
def teacher_forced_logprob(model, src_row, tokens):
    src = src_row[src_row != PAD][None]
    tgt_in = torch.tensor([[BOS] + tokens[:-1]])
    logits, _ = model(src, tgt_in)
    logp = torch.log_softmax(logits[0].double(), -1)
    return float(sum(logp[i, t] for i, t in enumerate(tokens)))


def test_beam_of_one_is_greedy(tiny_model):
    src = sources(4, 7)
    greedy = greedy_search(tiny_model, src, BOS, EOS, max_len_b=6)
    beam = beam_search(tiny_model, src, BOS, EOS, beam_size=1, alpha=0.0, max_len_b=6)
    assert [g.tokens for g in greedy] == [b[0].tokens for b in beam]


@pytest.mark.parametrize("style", ["gnmt", "average"])
def test_nbest_sorted_and_scores_match_definition(tiny_model, style):
    src = sources(3, 6)
    alpha = 0.8
    results = beam_search(tiny_model, src, BOS, EOS, beam_size=4, n_best=4, alpha=alpha, max_len_b=5,
                          length_style=style)
    for i, nbest in enumerate(results):
        assert len(nbest) == 4
        assert [h.score for h in nbest] == sorted((h.score for h in nbest), reverse=True)
        assert len({tuple(h.tokens) for h in nbest}) == 4, "distinct hypotheses"
        for h in nbest:
            logprob = teacher_forced_logprob(tiny_model, src[i], h.tokens)
            assert sum(h.token_logprobs) == pytest.approx(logprob, abs=1e-4)
            assert h.score == pytest.approx(logprob / normaliser(len(h.tokens), alpha, style), abs=1e-4)


def test_beam_finds_at_least_the_greedy_score(tiny_model):
    src = sources(5, 6)
    greedy = greedy_search(tiny_model, src, BOS, EOS, max_len_b=5)
    beam = beam_search(tiny_model, src, BOS, EOS, beam_size=6, alpha=0.0, max_len_b=5)
    compared = 0
    for g, b in zip(greedy, beam):
        if g.tokens[-1] == EOS:  # a finished greedy output competes with the finished beam outputs
            assert b[0].score >= g.score - 1e-5
            compared += 1
    assert compared, "at least one greedy output finished, so the property was checked"


@pytest.mark.parametrize("style", ["gnmt", "average"])
def test_greedy_scores_with_the_length_penalty(tiny_model, style):
    src = sources(3, 6)
    for alpha in (0.0, 1.0):
        for i, h in enumerate(greedy_search(tiny_model, src, BOS, EOS, max_len_b=5, alpha=alpha, length_style=style)):
            logprob = teacher_forced_logprob(tiny_model, src[i], h.tokens)
            assert h.score == pytest.approx(logprob / normaliser(len(h.tokens), alpha, style), abs=1e-4)


@pytest.mark.parametrize("beam_size", [1, 3])
def test_batch_invariance_with_random_batches(tiny_model, beam_size):
    src = sources(8, 9)
    full = beam_search(tiny_model, src, BOS, EOS, beam_size=beam_size, max_len_b=6)
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        perm = torch.randperm(8, generator=gen)[:5]
        part = src[perm]
        width = int((part != PAD).sum(1).max())
        out = beam_search(tiny_model, part[:, :width], BOS, EOS, beam_size=beam_size, max_len_b=6)
        for j, i in enumerate(perm.tolist()):
            assert out[j][0].tokens == full[i][0].tokens
            assert out[j][0].score == pytest.approx(full[i][0].score, abs=1e-4)


def run_session(session: BeamSession, src: torch.Tensor, joins: dict[int, list[int]]) -> tuple[dict, int]:
    """Step `session` to the end, admitting the rows joins[step] of `src` (cut to their width) before
    that step -> (row -> hypotheses, the longest the cache grew)."""
    got, step, longest = {}, 0, 0
    while session.live or any(s >= step for s in joins):
        if step in joins:
            rows = joins[step]
            width = int((src[rows] != PAD).sum(1).max())
            session.admit(src[rows, :width], rows)
        if session.live:
            got.update(session.step())
            longest = max(longest, session.cache.length if session.live else 0)
        step += 1
    return got, longest


@pytest.mark.parametrize("beam_size,style", [(1, "gnmt"), (3, "gnmt"), (4, "average")])
def test_sentences_that_join_a_running_search_get_the_search_they_get_alone(tiny_model, beam_size, style):
    """Continuous batching: sentences admitted between steps (and those already searching) end with
    the hypotheses a search of their own gives, whatever joined or left around them; the cache
    and token tables stay bounded by what is live (compaction)."""
    src = sources(12, 9)
    alone = [beam_search(tiny_model, src[i:i + 1], BOS, EOS, beam_size=beam_size, n_best=beam_size, alpha=0.6,
                         max_len_b=6, length_style=style)[0] for i in range(12)]
    session = BeamSession(tiny_model, BOS, EOS, beam_size, beam_size, 0.6, max_len_b=6, length_style=style)
    got, longest = run_session(session, src, {0: [0, 1], 1: [2], 2: [3, 4, 5], 4: [6], 5: [7, 8], 9: [9],
                                              12: [10, 11]})
    assert sorted(got) == list(range(12))
    for i in range(12):
        assert [h.tokens for h in got[i]] == [h.tokens for h in alone[i]], i
        assert [h.score for h in got[i]] == pytest.approx([h.score for h in alone[i]], abs=1e-4)
        assert [h.token_logprobs for h in got[i]][0] == pytest.approx(alone[i][0].token_logprobs, abs=1e-4)
    assert longest <= 6 + int(1.5 * 9) + 1  # compacted: never longer than one sentence's output


def test_length_penalty_formula():
    assert length_penalty(1, 0.0) == 1.0
    assert length_penalty(7, 1.0) == pytest.approx(2.0)
    assert length_penalty(13, 0.6) == pytest.approx(3.0**0.6)
    assert length_penalty(7, 1.0, "gnmt") == length_penalty(7, 1.0)
    assert length_penalty(7, 0.0, "average") == 1.0
    assert length_penalty(4, 1.0, "average") == 4.0  # alpha 1: the mean log-probability per token
    assert length_penalty(9, 0.5, "average") == pytest.approx(3.0)


def test_unknown_length_style_rejected_before_searching(tiny_model):
    calls = []
    tiny_model.encode = lambda *a: calls.append(a)
    for search in (beam_search, greedy_search):
        with pytest.raises(ParamError, match="length_style must be gnmt or average, got 'mean'"):
            search(tiny_model, sources(1, 4), BOS, EOS, length_style="mean")
    assert calls == [], "nothing was decoded"


def test_n_best_larger_than_beam_rejected(tiny_model):
    with pytest.raises(ValueError, match="n_best"):
        beam_search(tiny_model, sources(1, 4), BOS, EOS, beam_size=2, n_best=3)


@pytest.mark.parametrize("beam_size,alpha,max_len_b,style,banned", [
    (2, 0.6, 7, "gnmt", ()), (4, 1.0, 5, "gnmt", ()), (10, 0.0, 4, "gnmt", ()),
    (3, 1.0, 6, "average", ()), (4, 0.6, 7, "average", BANNED), (10, 1.0, 4, "gnmt", BANNED)])
def test_equals_the_reference_search(tiny_model, beam_size, alpha, max_len_b, style, banned):
    """Tensor-batched search == the plain one-sentence-at-a-time search without a cache: same
    hypotheses in the same order, same scores (beam 10 > vocabulary 19 / 2 pads the candidates,
    and more so with 2 ids banned)."""
    src = sources(6, 8)
    fast = beam_search(tiny_model, src, BOS, EOS, beam_size=beam_size, n_best=beam_size, alpha=alpha,
                       max_len_b=max_len_b, length_style=style, banned=banned)
    limits = output_limits(src, PAD, 1.5, max_len_b, tiny_model.config.max_len).tolist()
    for i, nbest in enumerate(fast):
        expected = reference_beam_search(tiny_model, src[i], BOS, EOS, beam_size, alpha, limits[i], style,
                                         banned)[:beam_size]
        assert [h.tokens for h in nbest] == [h.tokens for h in expected]
        for h, e in zip(nbest, expected):
            assert h.score == pytest.approx(e.score, abs=1e-4)
            assert h.token_logprobs == pytest.approx(e.token_logprobs, abs=1e-4)


@pytest.mark.parametrize("vocab", [GROUP * 200, GROUP * 200 + 5, 1000])
def test_top_of_rows_is_topk(vocab):
    """The grouped top-k gives torch.topk's values exactly (columns holding those values), over
    rows with ties (a coarse grid of values), -inf (banned ids) and a vocabulary GROUP does not divide."""
    torch.manual_seed(vocab)
    x = (torch.randn(64, vocab) * 4).round() / 4  # many equal values
    x[:, :2] = float("-inf")
    x[0, :] = float("-inf")  # a row with nothing left
    x[1, -3:] = 50.0  # the best entries in the tail columns
    x[2, 7::vocab // GROUP] = 40.0  # ... all in one group
    for count in (1, 10):
        values, columns = top_of_rows(x, count)
        expected, _ = x.topk(count, dim=1)
        assert torch.equal(values, expected)
        assert torch.equal(x.gather(1, columns), values)
        assert all(len(set(row)) == count for row in columns.tolist())


def test_equals_the_reference_search_over_a_wide_vocabulary():
    """A vocabulary wide enough for the grouped top-k (beam search's usual case, unlike the tiny
    model's 19 ids): still the reference search's hypotheses."""
    config = ModelConfig(src_vocab_size=23, tgt_vocab_size=1700, d_model=32, n_heads=4, d_ff=64,
                         n_encoder_layers=1, n_decoder_layers=1, dropout=0.0, max_len=64)
    model = Transformer(config).eval()
    src = sources(4, 7)
    fast = beam_search(model, src, BOS, EOS, beam_size=5, n_best=5, alpha=0.6, max_len_b=5, banned=BANNED)
    limits = output_limits(src, PAD, 1.5, 5, config.max_len).tolist()
    for i, nbest in enumerate(fast):
        expected = reference_beam_search(model, src[i], BOS, EOS, 5, 0.6, limits[i], "gnmt", BANNED)[:5]
        assert [h.tokens for h in nbest] == [h.tokens for h in expected]


@pytest.mark.parametrize("style", ["gnmt", "average"])
def test_equals_the_reference_search_with_eos_likely(tiny_config, style):
    """A model biased towards </s> so that hypotheses finish at different steps and sentences leave
    the batch early, the paths the random model above rarely takes."""
    model = Transformer(tiny_config).eval()
    with torch.no_grad():
        model.generator.weight[EOS] += 0.4 * model.generator.weight.norm(dim=1).mean()
    src = sources(7, 9)
    fast = beam_search(model, src, BOS, EOS, beam_size=3, n_best=3, alpha=0.6, max_len_b=8, length_style=style)
    limits = output_limits(src, PAD, 1.5, 8, tiny_config.max_len).tolist()
    lengths = set()
    for i, nbest in enumerate(fast):
        expected = reference_beam_search(model, src[i], BOS, EOS, 3, 0.6, limits[i], style)[:3]
        assert [h.tokens for h in nbest] == [h.tokens for h in expected]
        lengths.update(len(h.tokens) for h in nbest)
    assert len(lengths) > 2, "hypotheses of several lengths finished"


def test_beams_share_one_memory_row_per_sentence(tiny_model):
    """The encoder memory is kept once per sentence, not copied per beam: every decode step sees
    `beam` target rows per memory row (1 at the first step)."""
    seen = []
    decode = tiny_model.decode

    def spy(tgt, cache, *args, **kwargs):
        seen.append((tgt.size(0), cache.memory_kv[0].k.size(0)))
        return decode(tgt, cache, *args, **kwargs)

    tiny_model.decode = spy
    beam_search(tiny_model, sources(5, 6), BOS, EOS, beam_size=4, max_len_b=5)
    assert seen[0] == (5, 5)
    assert all(rows == 4 * memory for rows, memory in seen[1:])


def test_average_style_can_rank_differently(tiny_config):
    """The two styles rank the same finished hypotheses differently somewhere (so the option does
    something), and with alpha 0 both are the plain sum."""
    model = Transformer(tiny_config).eval()
    with torch.no_grad():
        model.generator.weight[EOS] += 0.4 * model.generator.weight.norm(dim=1).mean()
    src = sources(8, 9)
    run = lambda style, alpha: beam_search(model, src, BOS, EOS, beam_size=4, n_best=4, alpha=alpha,  # noqa: E731
                                           max_len_b=8, length_style=style)
    tokens = lambda results: [[h.tokens for h in nbest] for nbest in results]  # noqa: E731
    assert tokens(run("gnmt", 0.0)) == tokens(run("average", 0.0))
    assert tokens(run("gnmt", 1.0)) != tokens(run("average", 1.0))


def biased(model: Transformer, bias: float) -> Transformer:
    """The model with an output bias on <pad> (and half of it on <s>): positive, they are the likeliest
    next tokens; negative, the model never chooses them."""
    out_bias = torch.zeros(model.config.tgt_vocab_size)
    out_bias[PAD], out_bias[BOS] = bias, bias / 2
    model.generator.register_forward_hook(lambda module, inputs, logits: logits + out_bias)
    return model


def test_banned_ids_never_produced_and_scores_not_renormalised(tiny_model):
    """With <pad> favoured, the unbanned search produces it and the banned one never produces <pad>
    or <s>; each kept token's log p is the model's own (teacher-forced, no renormalisation over the
    allowed tokens), so the banned outputs score below what the renormalised ones would."""
    model, src = biased(tiny_model, 8.0), sources(4, 6)
    free = greedy_search(model, src, BOS, EOS, max_len_b=5)
    assert all(h.tokens[0] == PAD for h in free), "the bias works: unbanned greedy starts with <pad>"
    outputs = [[h] for h in greedy_search(model, src, BOS, EOS, max_len_b=5, banned=BANNED)]
    outputs += beam_search(model, src, BOS, EOS, beam_size=3, n_best=3, max_len_b=5, banned=BANNED)
    for i, nbest in enumerate(outputs):
        for h in nbest:
            assert not set(h.tokens) & set(BANNED)
            assert sum(h.token_logprobs) == pytest.approx(teacher_forced_logprob(model, src[i % 4], h.tokens), abs=1e-4)
            assert h.token_logprobs[0] < -4.0, "p(<pad>) stays in the normaliser: every other token is unlikely"


@pytest.mark.parametrize("beam_size", [1, 4])
def test_banning_ids_a_model_never_chooses_changes_nothing(tiny_model, beam_size):
    """A model that never picks <pad> or <s> (pushed down by an output bias, as training leaves them)
    gives the same hypotheses and scores with the ban as without: the ban only removes candidates
    the search never keeps (tests/cli/test_translate_cli.py shows it on a trained model)."""
    model, src = biased(tiny_model, -30.0), sources(6, 8)

    def search(banned):
        if beam_size == 1:
            return [[h] for h in greedy_search(model, src, BOS, EOS, max_len_b=6, alpha=1.0, banned=banned)]
        return beam_search(model, src, BOS, EOS, beam_size=beam_size, n_best=beam_size, max_len_b=6, banned=banned)

    for before, after in zip(search(()), search(BANNED)):
        assert [h.tokens for h in before] == [h.tokens for h in after]
        assert [h.score for h in before] == pytest.approx([h.score for h in after], abs=1e-6)
