"""The test that catches a wrong mask, a missing scale or a broken residual: learn to reverse digits."""

import pytest
import torch

from transformer import ModelConfig, Transformer
from transformer.decoding import greedy_search
from transformer.training import label_smoothed_nll, noam_lr

PAD, BOS, EOS, FIRST_DIGIT = 0, 1, 2, 3


def batch_of_reversals(batch: int, generator: torch.Generator):
    lengths = torch.randint(3, 9, (batch,), generator=generator)
    src = torch.full((batch, 8), PAD)
    tgt_in = torch.full((batch, 9), PAD)
    tgt_out = torch.full((batch, 9), PAD)
    for i, n in enumerate(lengths.tolist()):
        digits = torch.randint(FIRST_DIGIT, FIRST_DIGIT + 10, (n,), generator=generator)
        src[i, :n] = digits
        tgt_in[i, 0], tgt_in[i, 1 : n + 1] = BOS, digits.flip(0)
        tgt_out[i, :n], tgt_out[i, n] = digits.flip(0), EOS
    return src, tgt_in, tgt_out


@pytest.mark.slow
def test_tiny_model_learns_to_reverse_sequences():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    config = ModelConfig(src_vocab_size=13, tgt_vocab_size=13, d_model=64, n_heads=4, d_ff=128,
                         n_encoder_layers=2, n_decoder_layers=2, dropout=0.0, max_len=32,
                         pad_id=PAD, share_embeddings=True)
    model = Transformer(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=1.0, betas=(0.9, 0.98), eps=1e-9)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: noam_lr(s + 1, 64, 200, factor=2.0))
    for step in range(3000):  # the bound: learnt well before this
        src, tgt_in, tgt_out = batch_of_reversals(64, gen)
        logits, _ = model(src, tgt_in)
        loss, _ = label_smoothed_nll(logits, tgt_out, 0.0, PAD)
        optimizer.zero_grad()
        (loss / (tgt_out != PAD).sum()).backward()
        optimizer.step()
        schedule.step()
        if step % 200 == 199 and accuracy(model, gen, 500) == 1.0:
            break
    assert accuracy(model, torch.Generator().manual_seed(123), 500) >= 0.99


def accuracy(model: Transformer, gen: torch.Generator, n: int) -> float:
    model.eval()
    src, _, tgt_out = batch_of_reversals(n, gen)
    hyps = greedy_search(model, src, BOS, EOS, max_len_a=1.0, max_len_b=2)
    correct = sum(h.tokens == [t for t in row.tolist() if t != PAD] for h, row in zip(hyps, tgt_out))
    model.train()
    return correct / n
