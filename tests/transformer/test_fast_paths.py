"""The training-speed levers compute the same thing as the plain path (bench/RESULTS.md measures them)."""

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from transformer import Transformer
from transformer.attention import MultiHeadAttention, fused_pays
from transformer.dropout import Dropout
from transformer.trainer import TrainConfig
from transformer.training import adam, batch_loss, label_smoothed_nll, train_step

PAD = 0


def batch(batch_size=4, length=7, vocab=19):
    src = torch.randint(4, 23, (batch_size, length))
    tgt = torch.randint(4, vocab, (batch_size, length + 1))
    src[0, 4:], tgt[0, 5:], tgt[2, 3:] = PAD, PAD, PAD
    tgt_out = tgt[:, 1:]
    return SimpleNamespace(src=src, tgt_in=tgt[:, :-1], tgt_out=tgt_out, n_tokens=int((tgt_out != PAD).sum()))


def test_keep_projects_only_the_kept_positions(tiny_model):
    b = batch()
    keep = b.tgt_out != PAD
    full, _ = tiny_model(b.src, b.tgt_in)
    kept, _ = tiny_model(b.src, b.tgt_in, keep=keep)
    assert kept.shape == (int(keep.sum()), full.size(-1))
    torch.testing.assert_close(kept, full[keep])


def test_batch_loss_equals_the_loss_over_all_logits(tiny_model):
    b = batch()
    full, _ = tiny_model(b.src, b.tgt_in)
    expected = label_smoothed_nll(full, b.tgt_out, 0.1, PAD)
    for got, want in zip(batch_loss(tiny_model, b, 0.1, PAD), expected):
        torch.testing.assert_close(got, want)


def test_dropout_keeps_the_expectation_and_rate():
    d = Dropout(0.3).train()
    x = torch.ones(400, 500)
    y = d(x)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 0.3) < 0.01
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / 0.7))
    assert abs(y.mean().item() - 1.0) < 0.01
    assert torch.equal(d.eval()(x), x) and torch.equal(Dropout(0.0).train()(x), x)
    with pytest.raises(ValueError):
        Dropout(1.0)


def test_dropout_gradient_is_the_mask():
    d = Dropout(0.5).train()
    x = torch.randn(50, 60, requires_grad=True)
    y = d(x)
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.where(y != 0, 2.0, 0.0))


def test_bf16_on_cpu_takes_the_explicit_formula_and_agrees_with_the_kernel():
    attn = MultiHeadAttention(32, 4).eval()
    x = torch.randn(3, 6, 32)
    mask = torch.ones(3, 1, 1, 6, dtype=torch.bool)
    mask[1, ..., 4:] = False
    assert fused_pays(x) and not fused_pays(x.bfloat16())
    with torch.no_grad():  # decoding: the explicit formula's forward is faster for few queries
        assert not fused_pays(x)
    reference, _ = attn(x, attn.project_kv(x), mask)  # float32: torch's fused kernel
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for causal in (False, True):
            out, record = attn(x, attn.project_kv(x), mask, causal=causal)
            assert record is None  # the explicit path's record is not handed out unasked
            if not causal:
                torch.testing.assert_close(out.float(), reference, atol=0.05, rtol=0.05)


def test_fused_adam_takes_the_same_steps_as_plain_adam(tiny_config):
    # eps 1e-2: with 1e-9, parameters whose gradient is ~0 move by +-lr on rounding noise alone
    models = [Transformer(tiny_config), Transformer(tiny_config)]
    models[1].load_state_dict(models[0].state_dict())
    plain = torch.optim.Adam(models[0].parameters(), lr=0.0, betas=(0.9, 0.98), eps=1e-2)
    fused = adam(models[1].parameters(), (0.9, 0.98), 1e-2)
    assert fused.param_groups[0]["fused"]
    b = batch()
    for _ in range(3):
        for model, opt in zip(models, (plain, fused)):
            train_step(model, opt, [b], 1e-3, 0.1, 1.0)
    for p, q in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)


def test_weight_decay_shrinks_the_matrices_and_leaves_biases_and_norms(tiny_config):
    """AdamW's decoupled decay: with zero gradients Adam's own update is 0, so one step multiplies
    every weight matrix (and embedding) by 1 - lr * weight_decay and leaves the 1-D parameters."""
    model = Transformer(tiny_config)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = adam(model.parameters(), (0.9, 0.98), 1e-9, weight_decay=0.1)
    for group in opt.param_groups:
        group["lr"] = 0.5
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for name, p in model.named_parameters():
        expected = before[name] * 0.95 if p.dim() >= 2 else before[name]
        torch.testing.assert_close(p.detach(), expected, msg=name)
    assert type(adam(model.parameters(), (0.9, 0.98), 1e-9)) is torch.optim.Adam  # 0: the paper's Adam
    with pytest.raises(ValueError, match="weight_decay must be in"):
        TrainConfig(weight_decay=-0.1)


def test_reuse_freed_memory_on_glibc():
    code = "from transformer_cli.runtime import reuse_freed_memory; print(reuse_freed_memory())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    import platform
    expected = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert out.strip() == str(expected)


def test_kernel_cache_bound_unless_the_user_set_one(monkeypatch):
    from transformer_cli.runtime import KERNEL_CACHE, bound_kernel_cache

    monkeypatch.delenv(KERNEL_CACHE, raising=False)
    bound_kernel_cache(16)
    assert os.environ[KERNEL_CACHE] == "16"
    monkeypatch.setenv(KERNEL_CACHE, "512")
    bound_kernel_cache(16)
    assert os.environ[KERNEL_CACHE] == "512"


def test_train_bounds_the_kernel_cache_before_training(monkeypatch, tmp_path):
    """oneDNN reads the bound when it makes its first kernel: train sets it before training starts."""
    import cli.train as train_cli
    from transformer_cli import runtime

    seen = []
    monkeypatch.delenv(runtime.KERNEL_CACHE, raising=False)
    monkeypatch.setattr("transformer_cli.training.train",
                        lambda *a, **k: seen.append(os.environ.get(runtime.KERNEL_CACHE)) or None)
    try:
        train_cli.run(tmp_path / "data", tmp_path / "run", None, None, None, {}, {})
    except Exception:  # noqa: BLE001 - the fake train returns nothing to show; only what it saw matters
        pass
    assert seen == [str(runtime.TRAIN_KERNEL_CACHE)]


def test_freed_memory_return_trims_at_most_every_interval(monkeypatch):
    from transformer_cli.runtime import FreedMemoryReturn

    now, trims = [100.0], []
    ret = FreedMemoryReturn(5.0, clock=lambda: now[0])
    ret.libc = SimpleNamespace(malloc_trim=trims.append)
    assert not ret() and trims == []  # too soon after it was made
    now[0] = 105.0
    assert ret() and trims == [0]
    now[0] = 109.0
    assert not ret() and trims == [0]
    now[0] = 110.5
    assert ret() and trims == [0, 0]
    ret.libc = None  # off glibc: nothing to call
    now[0] = 200.0
    assert not ret()


TRIMMED = """
import ctypes, sys
from transformer_cli.runtime import FreedMemoryReturn, reuse_freed_memory
def rss():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) // 1024
reuse_freed_memory()  # freed memory is kept (train and serve run so)
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
blocks = [libc.malloc(1 << 20) for _ in range(300)]
for b in blocks:
    ctypes.memset(b, 1, 1 << 20)
before = rss()
for b in blocks:
    libc.free(ctypes.c_void_p(b))
kept = rss()
FreedMemoryReturn(0.0)()
print(before, kept, rss())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_freed_memory_return_gives_kept_pages_back():
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc's malloc_trim")
    before, kept, after = map(int, subprocess.run([sys.executable, "-c", TRIMMED], capture_output=True, text=True,
                                                  check=True).stdout.split())
    assert kept > before - 50  # 300 MB freed but kept by malloc
    assert after < kept - 250  # and handed back by the trim


def test_serve_bounds_the_kernel_cache_and_trims_between_batches(monkeypatch):
    """oneDNN reads the bound at its first kernel: serve sets it before the model loads, and gives
    the model worker the memory return to run between batches."""
    from typer.testing import CliRunner

    from cli.main import app
    from transformer_cli import runtime

    seen = []
    monkeypatch.setenv(runtime.KERNEL_CACHE, "-")  # so that the test's end takes away what serve sets
    monkeypatch.delenv(runtime.KERNEL_CACHE)
    monkeypatch.setattr("transformer_cli.service.serve",
                        lambda options, announce, between: seen.append((os.environ.get(runtime.KERNEL_CACHE), between)))
    result = CliRunner().invoke(app, ["serve", "--model", "."])
    assert result.exit_code == 0, result.output
    [(bound, between)] = seen
    assert bound == str(runtime.SERVE_KERNEL_CACHE) and isinstance(between, runtime.FreedMemoryReturn)
