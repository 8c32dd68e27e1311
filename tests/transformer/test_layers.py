import dataclasses

import torch

from transformer.layers import FeedForward, LayerNorm, Residual, decoder_layer, encoder_layer


def test_layer_norm_matches_formula():
    ln = LayerNorm(12, eps=1e-5)
    with torch.no_grad():
        ln.gamma.normal_()
        ln.beta.normal_()
    x = torch.randn(3, 5, 12, dtype=torch.float64) * 3 + 1
    ln = ln.double()
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)  # biased variance, as the formula's Var
    expected = (x - mean) / torch.sqrt(var + 1e-5) * ln.gamma + ln.beta
    torch.testing.assert_close(ln(x), expected)


def test_feed_forward_is_relu_between_two_linears():
    ff = FeedForward(8, 32)
    x = torch.randn(2, 3, 8)
    expected = torch.clamp(x @ ff.w_1.weight.T + ff.w_1.bias, min=0) @ ff.w_2.weight.T + ff.w_2.bias
    torch.testing.assert_close(ff(x), expected)
    # position-wise: each position is transformed alone
    torch.testing.assert_close(ff(x[:, 1:2]), ff(x)[:, 1:2])


def test_residual_post_and_pre_norm():
    x = torch.randn(2, 4, 8)
    sub = lambda h: 2 * h + 1  # noqa: E731
    post = Residual(8, dropout=0.0, norm="post", eps=1e-5)
    pre = Residual(8, dropout=0.0, norm="pre", eps=1e-5)
    torch.testing.assert_close(post(x, sub), post.norm(x + sub(x)))
    torch.testing.assert_close(pre(x, sub), x + sub(pre.norm(x)))


def test_layers_are_built_from_every_field_of_the_config(tiny_config):
    c = dataclasses.replace(tiny_config, d_ff=48, norm="pre", layer_norm_eps=1e-6, attention_dropout=0.2, dropout=0.3)
    enc, dec = encoder_layer(c), decoder_layer(c)
    for ff in (enc.feed_forward, dec.feed_forward):
        assert (ff.w_1.in_features, ff.w_1.out_features, ff.w_2.out_features) == (c.d_model, 48, c.d_model)
    attentions = (enc.self_attn, dec.self_attn, dec.cross_attn)
    assert all(a.n_heads == c.n_heads and a.d_k == c.d_k and a.attention_dropout == 0.2 for a in attentions)
    residuals = (enc.attn_residual, enc.ff_residual, dec.self_residual, dec.cross_residual, dec.ff_residual)
    assert all(r.pre_norm and r.norm.eps == 1e-6 and r.dropout.p == 0.3 for r in residuals)
    assert len({id(m) for m in (*attentions, *residuals)}) == 8  # each sub-layer its own module
