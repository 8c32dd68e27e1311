
import pytest
import torch

from transformer import ModelConfig, Transformer
from transformer.fused_loss import smoothed_ce_and_kl
from transformer.trainer import OneProcess, TrainConfig
from torch.nn import functional as F

from transformer.training import (batch_loss, cooldown_factor, inverse_sqrt_lr, label_smoothed_nll, learning_rate,
                                  noam_lr, symmetric_kl, train_step)


def test_noam_schedule_formula():
    d_model, warmup = 512, 4000
    for step in (1, 10, 100, 3999, 4000, 4001, 10000, 100000):
        expected = d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)
        assert noam_lr(step, d_model, warmup) == pytest.approx(expected, rel=1e-12)
    assert noam_lr(2000, d_model, warmup, factor=2.0) == pytest.approx(2 * noam_lr(2000, d_model, warmup))
    rates = [noam_lr(s, d_model, warmup) for s in range(1, 20000, 50)]
    peak = max(range(len(rates)), key=rates.__getitem__)
    assert abs((1 + 50 * peak) - warmup) <= 50, "the peak is at the end of warm-up"


def test_inverse_sqrt_and_constant():
    assert inverse_sqrt_lr(50, 1e-3, 100) == pytest.approx(5e-4)
    assert inverse_sqrt_lr(100, 1e-3, 100) == pytest.approx(1e-3)
    assert inverse_sqrt_lr(400, 1e-3, 100) == pytest.approx(5e-4)
    assert learning_rate(7, "constant", 512, 100, 1.0, 3e-4) == 3e-4
    with pytest.raises(ValueError):
        learning_rate(1, "cosine", 512, 100, 1.0, 1e-3)


def test_cooldown_factor_is_one_then_falls_linearly_to_zero_at_the_budgets_end():
    assert [cooldown_factor(used, 0.2) for used in (0.0, 0.5, 0.8, 0.9, 0.95, 1.0, 1.3)] == \
        pytest.approx([1.0, 1.0, 1.0, 0.5, 0.25, 0.0, 0.0])
    assert cooldown_factor(0.99, 0.0) == 1.0 and cooldown_factor(0.5, 1.0) == pytest.approx(0.5)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_label_smoothing_against_definition(eps):
    vocab, pad = 7, 0
    logits = torch.randn(2, 5, vocab, dtype=torch.float64)
    target = torch.randint(1, vocab, (2, 5))
    target[1, 3:] = pad
    loss, nll = label_smoothed_nll(logits, target, eps, pad)
    expected_loss = expected_nll = 0.0
    for b in range(2):
        for t in range(5):
            if target[b, t] == pad:
                continue
            p = torch.softmax(logits[b, t], -1)
            q = torch.full((vocab,), eps / vocab, dtype=torch.float64)
            q[target[b, t]] += 1 - eps
            expected_loss += -(q * p.log()).sum().item()
            expected_nll += -p[target[b, t]].log().item()
    assert loss.item() == pytest.approx(expected_loss, rel=1e-6)
    assert nll.item() == pytest.approx(expected_nll, rel=1e-6)


class B:
    def __init__(self, src, tgt_in, tgt_out):
        self.src, self.tgt_in, self.tgt_out = src, tgt_in, tgt_out

    @property
    def n_tokens(self):
        return int((self.tgt_out != 0).sum())


def test_accumulation_equals_one_big_batch():
    cfg = ModelConfig(src_vocab_size=20, tgt_vocab_size=20, d_model=16, n_heads=2, d_ff=32,
                      n_encoder_layers=1, n_decoder_layers=1, dropout=0.0)
    src = torch.randint(1, 20, (4, 6))
    tgt = torch.randint(1, 20, (4, 6))
    tgt[2, 4:] = 0
    big = B(src, tgt, tgt)
    halves = [B(src[:2], tgt[:2], tgt[:2]), B(src[2:], tgt[2:], tgt[2:])]
    models = []
    for batches in ([big], halves):
        torch.manual_seed(0)
        model = Transformer(cfg).double()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        train_step(model, opt, batches, 0.1, 0.1, 0.0)
        models.append(model)
    for p, q in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(p, q)


@pytest.mark.parametrize("kwargs, words", [
    ({"max_tokens": 0}, "max_tokens"), ({"schedule": "cosine"}, "schedule"), ({"metric": "ter"}, "metric"),
    ({"label_smoothing": 1.0}, "label_smoothing"), ({"precision": "fp8"}, "precision"),
    ({"r_drop": -1.0}, "r_drop"), ({"cooldown": 1.5}, "cooldown"),
])
def test_train_config_rejects_impossible_values(kwargs, words):
    with pytest.raises(ValueError, match=words):
        TrainConfig(**kwargs)


def test_train_config_unknown_keys():
    with pytest.raises(ValueError, match="unknown training keys: speed"):
        TrainConfig.from_dict({"speed": 3})
    assert TrainConfig.from_dict(TrainConfig().to_dict()) == TrainConfig()


@pytest.mark.parametrize("kwargs, words", [
    ({"lr": float("nan")}, "lr must be a finite number"),
    ({"max_steps": 10.0}, "max_steps must be an int"),
    ({"tensorboard": "yes"}, "tensorboard must be a bool"),
])
def test_train_config_checks_types(kwargs, words):
    with pytest.raises(ValueError, match=words):
        TrainConfig(**kwargs)


def test_fit_takes_no_step_past_a_reached_limit():
    from transformer.trainer import TrainState, fit

    class Hooks(OneProcess):
        def batches(self, epoch, start):
            raise AssertionError("a finished run read a batch")

        def evaluate(self, state):
            raise AssertionError("nothing to validate")

        def checkpoint(self, state, is_best):
            raise AssertionError("nothing to save")

        def log(self, event):
            raise AssertionError("nothing to log")

    model = Transformer(ModelConfig(src_vocab_size=10, tgt_vocab_size=10, d_model=8, n_heads=2, d_ff=8,
                                    n_encoder_layers=1, n_decoder_layers=1, max_len=16))
    optimizer = torch.optim.Adam(model.parameters())
    for cfg, state in ((TrainConfig(max_steps=5), TrainState(step=5, last_eval_step=5)),
                       (TrainConfig(max_epochs=2), TrainState(step=7, epoch=2, last_eval_step=7)),
                       (TrainConfig(max_time=1.0), TrainState(step=3, elapsed=2.0, last_eval_step=3))):
        assert fit(model, optimizer, cfg, state, Hooks()).step == state.step
        assert state.stop_reason.startswith("max")


def test_label_smoothing_skips_a_class_the_model_never_produces():
    """An imported model's <s> has logit -inf: the loss stays finite, equal to the definition over the
    other classes, and its gradient reaches every other logit."""
    vocab, eps = 7, 0.1
    logits = torch.randn(4, vocab, dtype=torch.float64)
    logits[:, 2] = float("-inf")
    logits.requires_grad_(True)
    target = torch.tensor([1, 3, 4, 6])
    loss, _ = label_smoothed_nll(logits, target, eps, pad_id=0)
    classes = [c for c in range(vocab) if c != 2]
    p = torch.softmax(logits.detach()[:, classes], -1)
    q = torch.full_like(p, eps / len(classes))
    q[torch.arange(4), torch.tensor([classes.index(int(t)) for t in target])] += 1 - eps
    assert torch.isfinite(loss) and loss.item() == pytest.approx(-(q * p.log()).sum().item(), rel=1e-6)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad[:, 2] == 0).all()


def test_symmetric_kl_is_the_mean_of_both_kl_directions():
    torch.manual_seed(0)
    p1, p2 = torch.randn(5, 7, dtype=torch.float64), torch.randn(5, 7, dtype=torch.float64)
    l1, l2 = F.log_softmax(p1, -1), F.log_softmax(p2, -1)
    both = F.kl_div(l2, l1, log_target=True, reduction="sum") + F.kl_div(l1, l2, log_target=True, reduction="sum")
    torch.testing.assert_close(symmetric_kl(torch.cat([p1, p2])), both / 2)
    assert symmetric_kl(torch.cat([p1, p1])) == 0
    masked = torch.cat([p1, p2]).index_fill(1, torch.tensor([3]), float("-inf"))  # a class neither produces
    assert torch.isfinite(symmetric_kl(masked)) and symmetric_kl(masked) > 0


@pytest.mark.parametrize("alpha", [0.0, 5.0])
@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("never", [False, True], ids=["all-classes", "a-class-never-produced"])
def test_fused_loss_and_its_gradient_are_autograds_through_the_formulas(alpha, eps, never):
    """smoothed_ce_and_kl (the gradient written out) == label_smoothed_nll + alpha * symmetric_kl
    through autograd, value and gradient, in float64; also with a class whose logit is -inf."""
    torch.manual_seed(0)
    logits = 3 * torch.randn(12, 9, dtype=torch.float64)
    target = torch.randint(1, 9, (12,))
    if never:
        logits[:, 2] = float("-inf")
        target[target == 2] = 3
    fused, reference = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    loss, nll = smoothed_ce_and_kl(fused, target, eps, alpha)
    want, want_nll = label_smoothed_nll(reference, target, eps, pad_id=0)
    want = want + alpha * symmetric_kl(reference) if alpha else want
    torch.testing.assert_close(loss, want)
    torch.testing.assert_close(nll, want_nll)
    assert not nll.requires_grad
    loss.backward()
    want.backward()
    torch.testing.assert_close(fused.grad, reference.grad.nan_to_num(0.0))


def test_fused_loss_gives_bf16_logits_a_bf16_gradient_scaled_by_the_upstream_one():
    torch.manual_seed(0)
    logits = torch.randn(8, 11)
    target = torch.randint(0, 11, (8,))
    grads = []
    for scale in (1.0, 4.0):
        z = logits.bfloat16().requires_grad_()
        loss, _ = smoothed_ce_and_kl(z, target, 0.1, 5.0)
        assert loss.dtype == torch.float32
        (scale * loss).backward()
        assert z.grad.dtype == torch.bfloat16
        grads.append(z.grad.float())
    torch.testing.assert_close(grads[1], 4 * grads[0])


def _dropout_model_and_batch():
    torch.manual_seed(0)
    cfg = ModelConfig(src_vocab_size=20, tgt_vocab_size=20, d_model=16, n_heads=2, d_ff=32,
                      n_encoder_layers=1, n_decoder_layers=1, dropout=0.3)
    src, tgt = torch.randint(1, 20, (4, 6)), torch.randint(1, 20, (4, 6))
    tgt[2, 4:] = 0
    return Transformer(cfg).double(), B(src, tgt, tgt)


def test_r_drop_without_dropout_is_the_plain_loss():
    """In eval mode the two copies agree: the KL term is 0 and R-Drop's loss is the plain one."""
    model, b = _dropout_model_and_batch()
    model.eval()
    plain = batch_loss(model, b, 0.1, 0)
    for got, want in zip(batch_loss(model, b, 0.1, 0, r_drop=5.0), plain):
        torch.testing.assert_close(got, want)


def test_r_drop_adds_alpha_times_a_positive_consistency_term_under_dropout():
    """With dropout the copies differ: the loss grows linearly in alpha, by the two predictions' KL/2."""
    model, b = _dropout_model_and_batch()
    model.train()
    losses = []
    for alpha in (1.0, 2.0, 3.0):
        torch.manual_seed(7)  # the same dropout masks for each alpha
        losses.append(batch_loss(model, b, 0.1, 0, r_drop=alpha)[0].item())
    assert losses[1] - losses[0] > 0
    assert losses[2] - losses[0] == pytest.approx(2 * (losses[1] - losses[0]), rel=1e-4)


def test_r_drop_step_pulls_the_two_predictions_together():
    """Steps on the consistency term alone (alpha large, plain SGD) lower the KL between two dropout
    passes of the same batch."""
    model, b = _dropout_model_and_batch()

    def kl() -> float:
        model.train()
        torch.manual_seed(3)
        keep = b.tgt_out != 0
        twice = lambda t: torch.cat([t, t])  # noqa: E731
        with torch.no_grad():
            return symmetric_kl(model(twice(b.src), twice(b.tgt_in), keep=twice(keep))[0]).item()

    before = kl()
    opt = torch.optim.SGD(model.parameters(), lr=0.02)
    for _ in range(20):
        train_step(model, opt, [b], 0.02, 0.0, 0.0, r_drop=50.0)
    assert kl() < before
