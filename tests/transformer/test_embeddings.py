import math

import pytest
import torch

from transformer.embeddings import PositionalEncoding, TokenEmbedding, sinusoidal_table


def test_sinusoidal_table_value_by_value():
    max_len, d_model = 50, 16
    table = sinusoidal_table(max_len, d_model, dtype=torch.float64)
    for pos in range(max_len):
        for i in range(d_model // 2):
            angle = pos / 10000 ** (2 * i / d_model)
            # within 1 ulp of libm: torch's vectorised sin/cos (AVX-512 here) may round the last bit otherwise
            assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), rel=3e-16, abs=1e-300)
            assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), rel=3e-16, abs=1e-300)


def test_positional_encoding_adds_table_at_offset():
    pe = PositionalEncoding(d_model=8, max_len=20, dropout=0.0)
    x = torch.zeros(2, 3, 8)
    table = sinusoidal_table(20, 8)
    torch.testing.assert_close(pe(x), table[:3].expand(2, 3, 8))
    torch.testing.assert_close(pe(x, offset=5), table[5:8].expand(2, 3, 8))


def test_token_embedding_scaled_by_sqrt_d_model():
    emb = TokenEmbedding(vocab_size=11, d_model=16, pad_id=0)
    ids = torch.tensor([[1, 5, 0]])
    out = emb(ids)
    torch.testing.assert_close(out, emb.weight[ids] * 4.0)
    assert torch.all(out[0, 2] == 0), "the padding row stays zero"
