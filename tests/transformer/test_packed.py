import pytest
import torch
from torch import nn

from transformer.model import Transformer
from transformer.packed import PackedLinear, can_pack, pack_linears

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")


def test_packed_linear_computes_the_same_affine_map():
    lin = nn.Linear(48, 96)
    x = torch.randn(3, 7, 48)
    with torch.no_grad():
        expected = x @ lin.weight.T + lin.bias
        assert pack_linears(lin) == 1 and isinstance(lin, PackedLinear)
        torch.testing.assert_close(lin(x), expected, atol=1e-5, rtol=1e-5)


def test_pack_keeps_parameters_ties_and_state_dict(tiny_config):
    model = Transformer(tiny_config).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    n = pack_linears(model)
    layers = tiny_config.n_encoder_layers * 6 + tiny_config.n_decoder_layers * 10 + 1  # + the generator
    assert n == layers
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    assert model.generator.weight is model.tgt_embed.weight  # still tied


def test_packed_model_decodes_like_the_plain_one(tiny_config):
    plain = Transformer(tiny_config).eval()
    packed = Transformer(tiny_config).eval()
    packed.load_state_dict(plain.state_dict())
    pack_linears(packed)
    src, tgt = torch.randint(3, 19, (4, 9)), torch.randint(3, 19, (4, 6))
    with torch.inference_mode():
        torch.testing.assert_close(packed(src, tgt)[0], plain(src, tgt)[0], atol=1e-5, rtol=1e-5)


def test_gradients_take_the_plain_path():
    """Training through a packed layer still gets gradients (the packed copy has none)."""
    lin = nn.Linear(8, 4)
    pack_linears(lin)
    x = torch.randn(5, 8, requires_grad=True)
    lin(x).sum().backward()
    torch.testing.assert_close(lin.weight.grad, x.detach().sum(0).expand(4, 8))


def test_nothing_packed_off_the_cpu_or_without_onednn(monkeypatch):
    lin = nn.Linear(8, 4)
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert not can_pack(lin) and pack_linears(lin) == 0 and type(lin) is nn.Linear
