"""fit() driven by fake hooks: every stopping rule, accumulation, interruption, and evaluate_loss."""

import pytest
import torch

from transformer import ModelConfig, Transformer
from transformer.trainer import OneProcess, TrainConfig, TrainState, fit
from transformer.training import evaluate_loss


class Batch:
    def __init__(self, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.src = torch.randint(4, 20, (2, 5), generator=g)
        tgt = torch.randint(4, 20, (2, 6), generator=g)
        self.tgt_in, self.tgt_out = tgt[:, :-1], tgt[:, 1:]

    @property
    def n_tokens(self) -> int:
        return int(self.tgt_out.numel())


class FakeHooks(OneProcess):
    """An epoch of `per_epoch` batches; validation scores come from `scores` in turn."""

    def __init__(self, per_epoch: int = 4, scores=None) -> None:
        self.per_epoch, self.scores = per_epoch, list(scores or [])
        self.read, self.events, self.saved = [], [], []

    def batches(self, epoch, start):
        for i in range(start, self.per_epoch):
            self.read.append((epoch, i))
            yield Batch(epoch * 100 + i)

    def evaluate(self, state):
        return {"score": self.scores.pop(0) if self.scores else 0.0, "loss": 1.0}

    def checkpoint(self, state, is_best):
        self.saved.append((state.step, is_best))

    def log(self, event):
        self.events.append(event)


def model():
    torch.manual_seed(0)
    return Transformer(ModelConfig(src_vocab_size=20, tgt_vocab_size=20, d_model=16, n_heads=2, d_ff=32,
                                   n_encoder_layers=1, n_decoder_layers=1, max_len=16))


def run(cfg: TrainConfig, hooks: FakeHooks, should_stop=lambda: False) -> TrainState:
    m = model()
    return fit(m, torch.optim.Adam(m.parameters()), cfg, TrainState(), hooks, should_stop)


def test_max_steps_and_final_validation():
    hooks = FakeHooks()
    state = run(TrainConfig(max_steps=6, eval_every=4, log_every=2, warmup=2), hooks)
    assert (state.step, state.epoch, state.stop_reason) == (6, 1, "max steps (6)")
    assert [s for s, _ in hooks.saved] == [4, 6], "validated every 4 steps and once at the end"
    assert [e["step"] for e in hooks.events if e["event"] == "train"] == [2, 4, 6]


def test_max_epochs_counts_whole_epochs():
    hooks = FakeHooks(per_epoch=3)
    state = run(TrainConfig(max_epochs=2, eval_every=100, warmup=2), hooks)
    assert (state.step, state.epoch, state.stop_reason) == (6, 2, "max epochs (2)")
    assert hooks.read == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]


def test_accumulation_takes_one_update_per_group_and_drops_a_partial_one():
    hooks = FakeHooks(per_epoch=5)
    state = run(TrainConfig(accumulate=2, max_epochs=1, eval_every=100, warmup=2), hooks)
    assert state.step == 2 and len(hooks.read) == 5, "5 batches: 2 updates of 2, the fifth dropped"


def test_patience_stops_after_validations_without_improvement():
    hooks = FakeHooks(scores=[1.0, 2.0, 1.5, 1.9, 0.3])
    state = run(TrainConfig(eval_every=1, patience=3, max_steps=100, warmup=2), hooks)
    assert state.stop_reason == "no improvement in 3 validations"
    assert (state.step, state.best_step, state.best_score) == (5, 2, 2.0)
    assert [best for _, best in hooks.saved] == [True, True, False, False, False]


def rates(hooks: FakeHooks) -> list[float]:
    return [e["lr"] for e in hooks.events if e["event"] == "train"]


def test_cooldown_takes_the_rate_linearly_to_zero_over_the_last_part_of_the_steps():
    plain, cooled = FakeHooks(per_epoch=20), FakeHooks(per_epoch=20)
    settings = dict(max_steps=10, eval_every=100, log_every=1, warmup=4)
    run(TrainConfig(**settings), plain)
    run(TrainConfig(cooldown=0.5, **settings), cooled)
    factors = [c / p for p, c in zip(rates(plain), rates(cooled))]
    # update k is taken with (k - 1) of 10 updates done: the factor is min(1, (1 - (k - 1) / 10) / 0.5)
    assert factors == pytest.approx([1.0] * 6 + [0.8, 0.6, 0.4, 0.2])


def test_cooldown_follows_the_clock_when_max_time_ends_sooner(monkeypatch):
    """A fake clock that moves a second per reading: the 12-second budget ends long before 100 steps, and
    each update's rate is cooled by the training time spent before it."""
    import itertools
    import types

    from transformer import trainer
    ticks = itertools.count()
    monkeypatch.setattr(trainer, "time", types.SimpleNamespace(perf_counter=lambda: float(next(ticks))))
    hooks = FakeHooks(per_epoch=20)
    cfg = TrainConfig(schedule="constant", lr=1.0, max_steps=100, max_time=12.0, cooldown=0.5, eval_every=100,
                      log_every=1)
    state = run(cfg, hooks)
    assert state.stop_reason.startswith("max time") and state.step < 100
    spent = [0.0] + [e["elapsed"] for e in hooks.events if e["event"] == "train"][:-1]
    assert rates(hooks) == pytest.approx([min(1.0, (1 - t / 12.0) / 0.5) for t in spent])
    assert rates(hooks)[0] == 1.0 and min(rates(hooks)) < 0.5, "the last updates of the time budget were cooled"


def test_max_time_stops():
    hooks = FakeHooks()
    state = run(TrainConfig(max_time=1e-9, eval_every=100, warmup=2), hooks)
    assert state.step == 1 and state.stop_reason.startswith("max time")


def test_interruption_checkpoints_without_validating():
    hooks = FakeHooks()
    calls = []
    state = run(TrainConfig(eval_every=100, warmup=2), hooks, should_stop=lambda: calls.append(1) or len(calls) > 3)
    assert state.stop_reason == "interrupted"
    assert hooks.saved == [(state.step, False)] and not [e for e in hooks.events if e["event"] == "eval"]


def test_an_epoch_shorter_than_accumulate_is_an_error():
    with pytest.raises(ValueError, match="fewer batches than accumulate 8"):
        run(TrainConfig(accumulate=8, eval_every=100, warmup=2), FakeHooks(per_epoch=3))


def test_evaluate_loss_is_the_token_weighted_mean():
    m = model().eval()
    batches = [Batch(1), Batch(2)]
    loss, nll = evaluate_loss(m, batches, label_smoothing=0.0)
    assert loss == pytest.approx(nll)
    with torch.no_grad():
        per_batch = [torch.nn.functional.cross_entropy(m(b.src, b.tgt_in)[0].flatten(0, 1), b.tgt_out.flatten(),
                                                       ignore_index=0, reduction="sum") for b in batches]
    expected = float(sum(per_batch)) / sum(int((b.tgt_out != 0).sum()) for b in batches)
    assert nll == pytest.approx(expected, rel=1e-5)


def test_evaluate_loss_builds_no_autograd_graph():
    """Validation needs no gradients: the model runs with grad mode off (no graph, no saved tensors)."""
    m = model().eval()
    modes = []
    m.register_forward_hook(lambda *_: modes.append(torch.is_grad_enabled()))
    evaluate_loss(m, [Batch(1), Batch(2)], label_smoothing=0.1)
    assert modes == [False, False]
