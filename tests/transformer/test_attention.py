import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from transformer.attention import MultiHeadAttention, scaled_dot_product_attention
from transformer.masks import causal_mask, padding_mask


def reference_attention(q, k, v, mask):
    """softmax(QK^T/sqrt(d_k))V in float64, one row at a time, straight from the formula."""
    q, k, v = q.double(), k.double(), v.double()
    *lead, q_len, d_k = q.shape
    out = torch.zeros(*lead, q_len, v.size(-1), dtype=torch.float64)
    weights = torch.zeros(*lead, q_len, k.size(-2), dtype=torch.float64)
    for idx in torch.cartesian_prod(*[torch.arange(n) for n in lead]).reshape(-1, len(lead)).tolist():
        idx = tuple(idx)
        for i in range(q_len):
            allowed = [j for j in range(k.size(-2)) if mask is None or mask.expand(*lead, q_len, k.size(-2))[idx + (i, j)]]
            if not allowed:
                continue
            s = torch.tensor([(q[idx + (i,)] @ k[idx + (j,)]).item() / math.sqrt(d_k) for j in allowed], dtype=torch.float64)
            p = torch.exp(s - s.max()) / torch.exp(s - s.max()).sum()
            for w, j in zip(p, allowed):
                weights[idx + (i, j)] = w
                out[idx + (i,)] += w * v[idx + (j,)]
    return out, weights


@pytest.fixture
def qkv():
    return torch.randn(2, 3, 5, 8), torch.randn(2, 3, 6, 8), torch.randn(2, 3, 6, 8)


def test_matches_float64_reference(qkv):
    q, k, v = qkv
    mask = torch.rand(2, 1, 5, 6) > 0.3
    out, record = scaled_dot_product_attention(q, k, v, mask)
    weights = record.weights
    ref_out, ref_w = reference_attention(q, k, v, mask)
    torch.testing.assert_close(out.double(), ref_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weights.double(), ref_w, atol=1e-6, rtol=1e-5)


def test_matches_torch_fused_sdpa(qkv):
    q, k, v = qkv
    mask = torch.rand(2, 1, 5, 6) > 0.3
    mask[..., 0] = True  # every row keeps a key, where torch's kernels agree on the definition
    out, _ = scaled_dot_product_attention(q, k, v, mask)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    out, _ = scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v))


def test_masked_weights_exactly_zero_and_rows_sum_to_one(qkv):
    q, k, v = qkv
    mask = torch.rand(2, 3, 5, 6) > 0.5
    mask[..., 2] = True
    weights = scaled_dot_product_attention(q, k, v, mask)[1].weights
    assert torch.all(weights[~mask] == 0.0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, 5))


def test_fully_masked_row_gives_no_nan(qkv):
    q, k, v = qkv
    mask = torch.ones(2, 1, 5, 6, dtype=torch.bool)
    mask[:, :, 1] = False
    out, record = scaled_dot_product_attention(q, k, v, mask)
    weights = record.weights
    assert not torch.isnan(out).any() and not torch.isnan(weights).any()
    assert torch.all(weights[:, :, 1] == 0) and torch.all(out[:, :, 1] == 0)


def copy_into_torch_mha(ours: MultiHeadAttention, d_model: int, n_heads: int) -> nn.MultiheadAttention:
    ref = nn.MultiheadAttention(d_model, n_heads, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight]))
        ref.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        ref.out_proj.weight.copy_(ours.out_proj.weight)
        ref.out_proj.bias.copy_(ours.out_proj.bias)
    return ref.eval()


@pytest.mark.parametrize("need_weights", [False, True])
def test_multi_head_equals_torch_multihead_attention(need_weights):
    d_model, n_heads = 32, 4
    ours = MultiHeadAttention(d_model, n_heads).eval()
    for p in ours.parameters():  # non-zero biases so they are checked too
        nn.init.normal_(p, std=0.1)
    ref = copy_into_torch_mha(ours, d_model, n_heads)
    x, memory = torch.randn(3, 7, d_model), torch.randn(3, 9, d_model)
    tokens = torch.randint(1, 10, (3, 9))
    tokens[0, 6:] = 0
    tokens[2, 4:] = 0

    # cross-attention with key padding
    out, rec = ours(x, ours.project_kv(memory), padding_mask(tokens, 0), need_weights=need_weights)
    ref_out, ref_w = ref(x, memory, memory, key_padding_mask=tokens == 0, average_attn_weights=False)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-4)
    if need_weights:
        torch.testing.assert_close(rec.weights, ref_w, atol=1e-6, rtol=1e-4)

    # causal self-attention
    out, rec = ours(x, ours.project_kv(x), causal=True, need_weights=need_weights)
    ref_out, ref_w = ref(x, x, x, attn_mask=~causal_mask(7)[0, 0], average_attn_weights=False)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-4)
    if need_weights:
        torch.testing.assert_close(rec.weights, ref_w, atol=1e-6, rtol=1e-4)
        assert torch.all(rec.weights.triu(diagonal=1) == 0)
        assert torch.all(torch.isneginf(rec.scores[..., ~causal_mask(7)[0, 0]]))

    # no mask at all
    out, _ = ours(x, ours.project_kv(x), need_weights=need_weights)
    torch.testing.assert_close(out, ref(x, x, x)[0], atol=1e-5, rtol=1e-4)


def test_scores_are_pre_softmax_qk_over_sqrt_dk():
    mha = MultiHeadAttention(16, 2).eval()
    x = torch.randn(1, 4, 16)
    _, rec = mha(x, mha.project_kv(x), need_weights=True)
    q = mha.split_heads(mha.q_proj(x))
    k = mha.split_heads(mha.k_proj(x))
    torch.testing.assert_close(rec.scores, q @ k.transpose(-2, -1) / math.sqrt(8))
    torch.testing.assert_close(rec.weights, torch.softmax(rec.scores, -1))


def test_query_rows_sharing_a_key_row_equal_repeated_keys():
    """Beam search folds the g query rows of one memory row into one row of g queries: the same
    outputs and maps as repeating the keys/values g times."""
    from transformer.attention import MultiHeadAttention

    attn = MultiHeadAttention(16, 4).eval()
    memory, query = torch.randn(2, 5, 16), torch.randn(6, 1, 16)  # 3 query rows per memory row
    mask = torch.ones(2, 1, 1, 5, dtype=torch.bool)
    mask[1, ..., 3:] = False
    with torch.no_grad():
        shared, rec = attn(query, attn.project_kv(memory), mask, need_weights=True)
        rep = memory.repeat_interleave(3, dim=0)
        copied, rec_copied = attn(query, attn.project_kv(rep), mask.repeat_interleave(3, dim=0), need_weights=True)
    torch.testing.assert_close(shared, copied)
    torch.testing.assert_close(rec.weights, rec_copied.weights)
    torch.testing.assert_close(rec.scores, rec_copied.scores)
    with pytest.raises(ValueError, match="causally"):
        attn(query, attn.project_kv(memory), causal=True)
