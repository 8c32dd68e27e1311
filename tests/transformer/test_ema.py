import pytest
import torch

from transformer import ModelConfig, Transformer
from transformer.ema import ema_rate, moving_average


def test_the_decay_warms_up_then_stays_at_its_value():
    rates = [ema_rate(0.99, n) for n in range(2000)]
    assert rates[0] == pytest.approx(0.1) and rates[1] == pytest.approx(2 / 11)
    assert all(a <= b for a, b in zip(rates, rates[1:]))
    assert max(rates) == 0.99 and rates[-1] == 0.99


def tiny_model() -> Transformer:
    torch.manual_seed(0)
    return Transformer(ModelConfig(src_vocab_size=20, tgt_vocab_size=20, d_model=16, n_heads=2, d_ff=32,
                                   n_encoder_layers=1, n_decoder_layers=1, max_len=16))


def test_the_average_follows_the_recurrence_and_leaves_the_model_alone():
    model = tiny_model()
    average = moving_average(model, 0.9)
    expected = None
    for n in range(6):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        current = {k: v.clone() for k, v in model.state_dict().items()}
        average.update_parameters(model)
        if expected is None:  # the first update copies the weights
            expected = current
        else:
            d = ema_rate(0.9, n)
            expected = {k: d * expected[k] + (1 - d) * current[k] for k in expected}
        assert all(torch.equal(model.state_dict()[k], current[k]) for k in current)
    got = average.module.state_dict()
    for k, v in expected.items():
        assert torch.allclose(got[k], v, atol=1e-6), k


def test_the_average_is_a_model_of_its_own_with_tied_weights():
    model = tiny_model()
    average = moving_average(model, 0.5)
    assert isinstance(average.module, Transformer) and not average.module.training
    a = average.module
    assert a.generator.weight is a.tgt_embed.weight  # tied as in the model
    assert a.generator.weight.data_ptr() != model.generator.weight.data_ptr()  # a copy, not a view
    assert set(a.state_dict()) == set(model.state_dict())


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.1])
def test_a_decay_outside_0_1_is_refused(decay):
    with pytest.raises(ValueError, match="decay"):
        moving_average(tiny_model(), decay)
