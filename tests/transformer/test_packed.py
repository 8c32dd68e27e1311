import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from transformer import packed
from transformer.model import Transformer
from transformer.packed import PackedLinear, can_pack, pack_linears

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")


def test_packed_linear_computes_the_same_affine_map():
    lin = PackedLinear(48, 96)
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
    lin = PackedLinear(8, 4)
    pack_linears(lin)
    x = torch.randn(5, 8, requires_grad=True)
    lin(x).sum().backward()
    torch.testing.assert_close(lin.weight.grad, x.detach().sum(0).expand(4, 8))


def test_nothing_packed_off_the_cpu_or_without_onednn(monkeypatch):
    lin = nn.Linear(8, 4)
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert not can_pack(lin) and pack_linears(lin) == 0 and type(lin) is nn.Linear


def test_the_model_is_built_of_packable_linears_that_start_plain(tiny_model):
    linears = [m for m in tiny_model.modules() if isinstance(m, nn.Linear)]
    assert linears and all(isinstance(m, PackedLinear) and not m.packing for m in linears)
    assert "_packed" not in vars(linears[0])  # nothing packed before pack_linears


def _packed_and_plain(config):
    packed, plain = Transformer(config).eval(), Transformer(config).eval()
    packed.load_state_dict(plain.state_dict())
    assert pack_linears(packed) > 0
    return packed, plain


def _assert_same_outputs(packed, plain, atol=1e-5):
    src, tgt = torch.randint(3, 19, (4, 9)), torch.randint(3, 19, (4, 6))
    with torch.inference_mode():
        torch.testing.assert_close(packed(src, tgt)[0], plain(src, tgt)[0], atol=atol, rtol=atol)


def test_packed_weights_follow_load_state_dict(tiny_config):
    packed, plain = _packed_and_plain(tiny_config)
    _assert_same_outputs(packed, plain)  # the packed copies are in use
    other = Transformer(tiny_config).eval()  # other weights (the seed moved on)
    packed.load_state_dict(other.state_dict())
    _assert_same_outputs(packed, other)
    assert packed.generator.weight is packed.tgt_embed.weight  # still tied


def test_packed_weights_follow_an_in_place_edit(tiny_config):
    packed, plain = _packed_and_plain(tiny_config)
    _assert_same_outputs(packed, plain)
    with torch.no_grad():
        for model in (packed, plain):
            model.decoder.layers[0].feed_forward.w_1.weight.mul_(-2.0)
            model.tgt_embed.weight.add_(0.5)  # the tied generator's weight too
    _assert_same_outputs(packed, plain)


def test_packed_weights_follow_a_dtype_cast(tiny_config):
    packed, plain = _packed_and_plain(tiny_config)
    _assert_same_outputs(packed, plain)
    packed.to(torch.bfloat16)
    plain.to(torch.bfloat16)
    lin = packed.encoder.layers[0].self_attn.q_proj
    x = torch.randn(5, tiny_config.d_model, dtype=torch.bfloat16)
    with torch.inference_mode():  # packed in bfloat16 where this CPU can, nn.Linear's path elsewhere
        torch.testing.assert_close(lin(x), plain.encoder.layers[0].self_attn.q_proj(x), atol=2e-2, rtol=2e-2)
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        assert lin.packed_weight().dtype == torch.bfloat16
    packed.float()
    plain.float()  # back through bfloat16: the rounded weights, not the first float32 ones
    _assert_same_outputs(packed, plain)


def test_exporters_trace_nn_linear_not_the_packed_kernel():
    lin = PackedLinear(8, 4).eval()
    pack_linears(lin)
    with torch.no_grad():
        program = torch.export.export(lin, (torch.randn(2, 8),))
    ops = [str(node.target) for node in program.graph.nodes if node.op == "call_function"]
    assert ops == ["aten.linear.default"]


def test_a_packed_model_can_be_copied(tiny_config):
    packed, plain = _packed_and_plain(tiny_config)
    _assert_same_outputs(copy.deepcopy(packed), plain)  # the copy packs its own weights again


@pytest.fixture(params=["fbgemm", "onednn"])
def int8_kernel(request, monkeypatch):
    """Both int8 kernels: fbgemm's one-call dynamic linear (layers up to FBGEMM_MAX_OUT wide) and
    oneDNN's quantised linear (wider layers; every layer where torch lacks fbgemm's operators)."""
    if request.param == "onednn":
        monkeypatch.setattr(packed, "FBGEMM_MAX_OUT", 0)
    return request.param


def test_int8_layers_compute_the_affine_map_within_quantisation_error(tiny_config, int8_kernel):
    model = Transformer(tiny_config).eval()
    plain = copy.deepcopy(model)
    assert pack_linears(model, int8=lambda name, layer: name == "generator" or "feed_forward" in name)
    assert model.generator.int8 and not model.encoder.layers[0].self_attn.q_proj.int8
    src, tgt = torch.randint(3, 19, (4, 9)), torch.randint(3, 19, (4, 6))
    with torch.inference_mode():
        got, expected = model(src, tgt)[0], plain(src, tgt)[0]
    error = ((got - expected).norm() / expected.norm()).item()
    assert 0 < error < 0.05  # 7- or 8-bit activations, 8-bit weights: about 1-2% here
    x = torch.zeros(2, tiny_config.d_model)  # zero stays exact: a zero input gives the bias
    with torch.inference_mode():
        torch.testing.assert_close(model.generator(x), plain.generator(x))


def test_int8_layers_use_the_kernel_their_width_calls_for(monkeypatch):
    """fbgemm up to FBGEMM_MAX_OUT outputs, oneDNN above, and oneDNN for every layer where torch lacks
    fbgemm's quantised operators."""
    narrow, wide = PackedLinear(16, packed.FBGEMM_MAX_OUT), PackedLinear(16, packed.FBGEMM_MAX_OUT + 1)
    pack_linears(narrow, int8=lambda name, layer: True)
    pack_linears(wide, int8=lambda name, layer: True)
    assert not isinstance(narrow.packed_weight(), tuple) and isinstance(wide.packed_weight(), tuple)
    monkeypatch.setattr(packed, "_fbgemm_weight", lambda *args: None)
    lost = PackedLinear(16, 8)
    pack_linears(lost, int8=lambda name, layer: True)
    assert isinstance(lost.packed_weight(), tuple)


def test_int8_layers_follow_an_in_place_change_of_the_bias(int8_kernel):
    """fbgemm packs the bias with the weight: a new bias alone packs again."""
    lin = PackedLinear(32, 24).requires_grad_(False)
    pack_linears(lin, int8=lambda name, layer: True)
    x = torch.randn(5, 32)
    with torch.inference_mode():
        before = lin(x)
    lin.bias.add_(1.0)
    with torch.inference_mode():
        torch.testing.assert_close(lin(x), before + 1.0)


def test_int8_weights_follow_load_state_dict_and_gradients_take_the_plain_path(tiny_config, int8_kernel):
    model, other = Transformer(tiny_config).eval(), Transformer(tiny_config).eval()
    pack_linears(model, int8=lambda name, layer: True)
    src, tgt = torch.randint(3, 19, (2, 5)), torch.randint(3, 19, (2, 4))
    with torch.inference_mode():
        before = model(src, tgt)[0]
    model.load_state_dict(other.state_dict())
    with torch.inference_mode():
        after, expected = model(src, tgt)[0], other(src, tgt)[0]
    assert ((after - expected).norm() / expected.norm()) < 0.05 and not torch.allclose(after, before)
    model.train()
    x = torch.randn(3, tiny_config.d_model, requires_grad=True)
    torch.testing.assert_close(model.generator(x), x @ model.generator.weight.T)  # exact: float32 with gradients


@pytest.mark.parametrize("activation", [F.relu, F.gelu, F.silu, torch.tanh])
def test_an_activation_fused_into_the_packed_kernel_gives_the_activation_of_the_affine_map(activation):
    """activated(x, f) == f(x W^T + b): fused as a oneDNN post-op (ReLU, GELU, SiLU) or applied after
    (any other function); ReLU bit for bit, its zeros where the affine map is negative."""
    lin = PackedLinear(48, 96).requires_grad_(False)
    x = torch.randn(3, 7, 48)
    expected = activation(x @ lin.weight.T + lin.bias)
    pack_linears(lin)
    with torch.inference_mode():
        got = lin.activated(x, activation)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
        if activation is F.relu:
            assert torch.equal(got, F.relu(lin(x))) and bool((got == 0).any())


@pytest.mark.parametrize("activation", [F.relu, F.gelu])
def test_an_int8_layer_fuses_relu_and_applies_other_activations_after(int8_kernel, activation):
    lin = PackedLinear(32, 64).requires_grad_(False)
    pack_linears(lin, int8=lambda name, layer: True)
    x = torch.randn(5, 32)
    with torch.inference_mode():
        assert torch.equal(lin.activated(x, activation), activation(lin(x)))


def test_an_activation_with_gradients_takes_the_plain_path():
    lin = PackedLinear(16, 8)
    pack_linears(lin)
    x = torch.randn(4, 16, requires_grad=True)
    out = lin.activated(x, F.relu)
    out.sum().backward()
    assert x.grad is not None and torch.equal(out, F.relu(x @ lin.weight.T + lin.bias))


@pytest.mark.parametrize("int8", [False, True])
def test_fused_linears_give_each_layers_output_and_follow_their_weights(int8):
    """FusedLinears computes W^Q, W^K, W^V as one packed layer: the same outputs as each layer alone
    (int8: one quantisation of the input, the same products), made again when a weight changes."""
    layers = [PackedLinear(32, n).requires_grad_(False) for n in (32, 32, 16)]
    fused = packed.FusedLinears(*layers)
    for layer in layers:
        pack_linears(layer, int8=(lambda name, layer: True) if int8 else None)
    x = torch.randn(2, 5, 32)
    with torch.inference_mode():
        for got, layer in zip(fused(x), layers):
            assert got.shape == (2, 5, layer.out_features)
            torch.testing.assert_close(got, layer(x), atol=1e-5, rtol=1e-5)
    layers[2].bias.add_(1.0)
    with torch.inference_mode():
        torch.testing.assert_close(fused(x)[2], layers[2](x), atol=1e-5, rtol=1e-5)
    assert copy.deepcopy(fused)._key is None  # copies make their own stacked layer


def test_fused_linears_compute_alone_with_gradients_or_mixed_settings():
    layers = [PackedLinear(8, 8) for _ in range(2)]
    fused = packed.FusedLinears(*layers)
    pack_linears(layers[0])
    pack_linears(layers[1], int8=lambda name, layer: True)
    x = torch.randn(3, 8)
    with torch.inference_mode():
        assert all(torch.equal(got, layer(x)) for got, layer in zip(fused(x), layers))
    assert fused._key is None  # nothing stacked: the layers differ in precision
    y = torch.randn(3, 8, requires_grad=True)
    sum(out.sum() for out in fused(y)).backward()
    assert y.grad is not None
