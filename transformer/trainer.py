"""fit(): a loop over train_step() with evaluation, checkpoints and stopping rules; state in TrainState."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol

import torch

from transformer.config import check_types
from transformer.errors import ParamError, named
from transformer.training import BatchLike, cooldown_factor, learning_rate, train_step, unwrap

METRICS = ("bleu", "chrf", "loss")


@dataclass(frozen=True)
class TrainConfig:
    max_tokens: int = 4096  # tokens per batch (padded size of the wider side)
    accumulate: int = 1  # batches per optimizer step
    label_smoothing: float = 0.1  # epsilon_ls
    bpe_dropout: float = 0.0  # > 0: every epoch re-segments the training pairs, skipping each BPE merge with
    # this probability (Provilkov et al., 2020; data/subwords.py); 0 = the prepared segmentation
    schedule: str = "noam"  # noam | inverse_sqrt | constant
    lr_factor: float = 1.0  # noam: factor * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)
    lr: float = 5e-4  # peak rate for inverse_sqrt and constant
    warmup: int = 4000  # warm-up steps
    cooldown: float = 0.0  # > 0: over this last fraction of the budget (max_time, or max_steps if it ends
    # sooner) the rate falls linearly to 0; 0 = the schedule alone
    beta1: float = 0.9  # Adam beta_1
    beta2: float = 0.98  # Adam beta_2
    adam_eps: float = 1e-9  # Adam epsilon
    weight_decay: float = 0.0  # > 0: AdamW's decoupled decay of the weight matrices (not biases, norms)
    r_drop: float = 0.0  # alpha > 0: R-Drop (Liang et al., 2021), each batch run twice and alpha times the
    # symmetric KL between the two predictions added to the loss (twice the compute per update)
    r_drop_from: int = 0  # plain updates before R-Drop starts (early on the model does not over-fit yet)
    clip_norm: float = 1.0  # gradient clipping by global norm; 0 = off
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast; fp16 with a gradient scaler) | auto (bf16
    # where the hardware computes it natively, else fp32: resolved by each process at start)
    compile: bool = False  # torch.compile the model for training (pays on CUDA, not on this CPU)
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # torch intra-op threads; 0 = torch's default
    seed: int = 1  # model init, dropout and batch order
    eval_every: int = 1000  # steps between validations (and checkpoints)
    eval_samples: int = 500  # validation sentences translated for BLEU/chrF; 0 = all
    log_every: int = 50  # steps between log lines
    keep_last: int = 3  # checkpoints kept besides the best
    metric: str = "bleu"  # bleu | chrf | loss: what selects the best checkpoint
    patience: int = 0  # stop after this many validations without improvement; 0 = never
    average_last: int = 0  # final model = mean of the last N checkpoints; 0 = the best checkpoint
    ema_decay: float = 0.0  # > 0: validate, keep and publish a moving average of the weights (transformer/ema.py)
    max_steps: int = 100000  # stop after this many updates
    max_epochs: int = 0  # stop after this many epochs; 0 = no limit
    max_time: float = 0.0  # stop after this many seconds of training; 0 = no limit
    tensorboard: bool = False  # also log to RUN/tensorboard
    choose_length_penalty: bool = False  # after the last step: translate the validation sample with beam 5 at
    # several length penalties and keep the best in RUN/search.json, translate's default for the run

    def __post_init__(self) -> None:
        check_types(self)
        positive = ("max_tokens", "accumulate", "warmup", "eval_every", "log_every", "max_steps")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("threads", "eval_samples", "keep_last", "patience", "average_last", "max_epochs",
                     "max_time", "clip_norm", "r_drop_from"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1) (0 = off), got {self.ema_decay}")
        if not 0.0 <= self.cooldown <= 1.0:
            raise ValueError(f"cooldown must be in [0, 1] (0 = off), got {self.cooldown}")
        if not 0.0 <= self.bpe_dropout < 1.0:
            raise ValueError(f"bpe_dropout must be in [0, 1) (0 = off), got {self.bpe_dropout}")
        if not 0.0 <= self.weight_decay < 1.0:
            raise ValueError(f"weight_decay must be in [0, 1) (0 = off), got {self.weight_decay}")
        if self.r_drop < 0:
            raise ValueError(f"r_drop must be >= 0 (0 = off), got {self.r_drop}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.lr <= 0 or self.lr_factor <= 0:
            raise ValueError("lr and lr_factor must be > 0")
        choices = {"schedule": ("noam", "inverse_sqrt", "constant"), "precision": ("fp32", "bf16", "fp16", "auto"),
                   "device": ("auto", "cpu", "cuda"), "metric": METRICS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown training keys: {', '.join(unknown)}")
        return cls(**d)


@dataclass
class TrainState:
    step: int = 0  # optimizer updates done
    epoch: int = 0  # current epoch (0-based)
    batch_in_epoch: int = 0  # batches of the current epoch already consumed
    tokens: int = 0  # target tokens trained on
    elapsed: float = 0.0  # seconds of training, summed over resumes
    best_score: float | None = None  # higher is better (the negated loss when the metric is loss)
    best_step: int = 0
    evals_without_improvement: int = 0
    last_eval_step: int = 0
    stop_reason: str = ""


class Hooks(Protocol):
    replicas: int  # processes that train together (DDP); each takes its share of every update's batches
    # this process's batches of `epoch` from global batch number `start` on, as many on every rank
    def batches(self, epoch: int, start: int) -> Iterator[BatchLike]: ...
    def evaluate(self, state: TrainState) -> dict: ...  # must hold "score", higher is better
    def checkpoint(self, state: TrainState, is_best: bool) -> None: ...
    def log(self, event: dict) -> None: ...
    def start_step(self, step: int) -> None: ...  # before update step+1 (DDP: seeds its dropout)
    def end_step(self, step: int) -> None: ...  # after update `step` (the moving average of the weights)
    # every rank must stop at the same update: the clock and a stop request agreed among them
    def agree(self, elapsed: float, stop: bool) -> tuple[float, bool]: ...


class OneProcess:
    """The parts of Hooks that a single-process run needs no work for."""

    replicas = 1

    def start_step(self, step: int) -> None:
        pass

    def end_step(self, step: int) -> None:
        pass

    def agree(self, elapsed: float, stop: bool) -> tuple[float, bool]:
        return elapsed, stop


def _validate(hooks: Hooks, state: TrainState) -> None:
    metrics = hooks.evaluate(state)
    score = metrics["score"]
    is_best = state.best_score is None or score > state.best_score
    if is_best:
        state.best_score, state.best_step, state.evals_without_improvement = score, state.step, 0
    else:
        state.evals_without_improvement += 1
    state.last_eval_step = state.step
    hooks.log({"event": "eval", "step": state.step, "epoch": state.epoch, "best_step": state.best_step,
               "is_best": is_best, **metrics})
    hooks.checkpoint(state, is_best)


def stop_reason(state: TrainState, cfg: TrainConfig, should_stop: Callable[[], bool], epochs: bool = True) -> str:
    """Why training should stop now ('' to go on): checked before the first update too, so a resumed
    run that already reached a limit trains no further step. The epoch limit counts at epoch ends.
    should_stop must already be agreed among ranks (fit passes it through hooks.agree)."""
    if state.step >= cfg.max_steps:
        return f"max steps ({cfg.max_steps})"
    if epochs and cfg.max_epochs and state.epoch >= cfg.max_epochs:
        return f"max epochs ({cfg.max_epochs})"
    if cfg.max_time and state.elapsed >= cfg.max_time:
        return f"max time ({cfg.max_time:g} s)"
    return "interrupted" if should_stop() else ""


def fit(model, optimizer: torch.optim.Optimizer, cfg: TrainConfig, state: TrainState,
        hooks: Hooks, should_stop: Callable[[], bool] = lambda: False, scaler=None) -> TrainState:
    """Train until max_steps / max_epochs / max_time / patience, or should_stop() (Ctrl-C).
    model: a Transformer or the Transformer in DistributedDataParallel (see train_step)."""
    started = time.perf_counter() - state.elapsed
    window = [0, time.perf_counter()]  # tokens and start of the current log window
    clock = _Clock(hooks, started, should_stop)
    clock.tick(state, measure=False)
    state.stop_reason = stop_reason(state, cfg, clock)
    while not state.stop_reason:
        whole_epoch, steps_before = state.batch_in_epoch == 0, state.step
        ran_out = _epoch(model, optimizer, cfg, state, hooks, clock, window, scaler)
        if not ran_out:
            break
        if whole_epoch and state.step == steps_before:
            raise ParamError(f"an epoch has fewer batches than {named('accumulate')} {cfg.accumulate}: "
                             f"lower {named('accumulate')} or {named('max_tokens')}", "accumulate", "max_tokens")
        state.epoch += 1  # the epoch ran out (a last partial accumulation group is dropped)
        state.batch_in_epoch = 0
        clock.tick(state)
        state.stop_reason = stop_reason(state, cfg, clock)
    if state.last_eval_step != state.step and state.stop_reason != "interrupted":
        _validate(hooks, state)
    elif state.stop_reason == "interrupted":
        hooks.checkpoint(state, False)
    return state


def budget_used(state: TrainState, cfg: TrainConfig) -> float:
    """The fraction of the budget spent: of max_time (agreed among ranks) or of max_steps, whichever is
    further along."""
    by_time = state.elapsed / cfg.max_time if cfg.max_time else 0.0
    return max(state.step / cfg.max_steps, by_time)


class _Clock:
    """Training time and the stop request, agreed among ranks once per update."""

    def __init__(self, hooks: Hooks, started: float, should_stop: Callable[[], bool]) -> None:
        self.hooks, self.started, self.should_stop = hooks, started, should_stop
        self.stop = False

    def tick(self, state: TrainState, measure: bool = True) -> None:
        """Agree on the elapsed time (measured now, or as the state holds it) and the stop request."""
        elapsed = time.perf_counter() - self.started if measure else state.elapsed
        state.elapsed, self.stop = self.hooks.agree(elapsed, self.should_stop())

    def __call__(self) -> bool:
        """The stop request as of the last tick()."""
        return self.stop


def _epoch(model, optimizer, cfg: TrainConfig, state: TrainState, hooks: Hooks, clock: _Clock,
           window: list, scaler) -> bool:
    """Updates over the rest of the current epoch; False when a stopping rule ended it early."""
    d_model = unwrap(model)[0].config.d_model
    group: list[BatchLike] = []
    for batch in hooks.batches(state.epoch, state.batch_in_epoch):
        group.append(batch)
        if len(group) < cfg.accumulate:
            continue
        lr = learning_rate(state.step + 1, cfg.schedule, d_model, cfg.warmup, cfg.lr_factor, cfg.lr)
        lr *= cooldown_factor(budget_used(state, cfg), cfg.cooldown)
        hooks.start_step(state.step)
        r_drop = cfg.r_drop if state.step >= cfg.r_drop_from else 0.0
        stats = train_step(model, optimizer, group, lr, cfg.label_smoothing, cfg.clip_norm, cfg.precision, scaler,
                           r_drop)
        state.step += 1
        hooks.end_step(state.step)
        state.batch_in_epoch += len(group) * hooks.replicas
        state.tokens += stats.tokens
        clock.tick(state)
        window[0] += stats.tokens
        group = []
        if state.step % cfg.log_every == 0:
            now = time.perf_counter()
            hooks.log({"event": "train", "step": state.step, "epoch": state.epoch, "loss": stats.loss,
                       "nll": stats.nll, "lr": lr, "grad_norm": stats.grad_norm,
                       "tokens_per_s": window[0] / max(now - window[1], 1e-9), "elapsed": state.elapsed,
                       "batch_in_epoch": state.batch_in_epoch})
            window[:] = [0, now]
        if state.step % cfg.eval_every == 0:
            _validate(hooks, state)
            if cfg.patience and state.evals_without_improvement >= cfg.patience:
                state.stop_reason = f"no improvement in {cfg.patience} validations"
        state.stop_reason = state.stop_reason or stop_reason(state, cfg, clock, epochs=False)
        if state.stop_reason:
            return False
    return True

