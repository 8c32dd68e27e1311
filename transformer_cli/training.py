"""train(): a prepared directory in, a trained run directory out. The library behind `transformer-cli train`;
a notebook calls it the same way, with callbacks instead of the terminal display."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from data.errors import DataError
from data.tokenizer import Tokenizers
from transformer.checkpoint import CONFIG_FILE, CheckpointError, read_config
from transformer.config import ModelConfig
from transformer.trainer import TrainConfig, TrainState, fit
from transformer_cli import run_dir as rd
from transformer_cli import train_config as tc
from transformer_cli.errors import RunError, os_error_message
from transformer_cli.metrics import best_from_metrics, plot_curves
from transformer_cli.run_lock import RunLock, is_empty_run_dir
from transformer_cli.runtime import pick_device, set_threads


@dataclass(frozen=True)
class TrainRequest:
    """What to train: where, on what, and which settings differ from the preset."""

    out: Path  # the run directory; an existing run in it is resumed
    data: Path | None = None  # the output of prepare (a resumed run remembers its own)
    resume: bool = False  # insist that `out` already holds a run
    preset: str | None = None  # tiny | small | base | big (a new run defaults to small)
    config_file: Path | None = None  # TOML or YAML: preset, [model], [training]
    model: dict = field(default_factory=dict)  # ModelConfig fields to override, e.g. {"d_model": 256}
    training: dict = field(default_factory=dict)  # TrainConfig fields to override, e.g. {"max_steps": 800}


@dataclass(frozen=True)
class RunStart:
    """What on_start is told once the model exists, before the first step."""

    run_dir: Path
    preset: str
    model_config: ModelConfig
    train_config: TrainConfig
    device: str
    parameters: int
    step: int  # 0 for a new run, the checkpoint's step for a resumed one


@dataclass
class TrainResult:
    state: TrainState  # step, epoch, tokens, time, best score, why it stopped
    run_dir: Path
    best: dict | None  # the best validation event of metrics.jsonl
    tokens_per_s: float  # target tokens per second in this call (a resume counts its own part)
    model_note: str  # what model.safetensors holds: best checkpoint, mean of the last N, last weights
    curves: Path | None  # curves.png (None without matplotlib)


def train(request: TrainRequest, on_start: Callable[[RunStart], None] = lambda s: None,
          on_event: Callable[[dict], None] = lambda e: None, should_stop: Callable[[], bool] = lambda: False,
          warn: Callable[[str], None] = lambda m: None) -> TrainResult:
    """Train (or resume) the run in request.out. on_event gets every log and validation event (the
    dicts of metrics.jsonl, validation samples included); should_stop() is polled after each step
    (True: checkpoint and stop). Problems are RunError with a one-sentence message."""
    with RunLock(request.out):
        plan = plan_run(request)
        return _start_and_fit(request.out, plan, on_start, on_event, should_stop, warn)


@dataclass(frozen=True)
class _Plan:
    """A run read and checked, before anything is built or written."""

    data_dir: Path
    toks: Tokenizers
    model_config: ModelConfig
    cfg: TrainConfig
    name: str  # the preset
    resuming: bool
    run_id: str
    data_info: dict  # what config.json records of the data


def plan_run(request: TrainRequest) -> _Plan:
    """Everything a run needs, read and checked; nothing is written."""
    run_dir, data, preset, config = request.out, request.data, request.preset, request.config_file
    model_flags, train_flags = dict(request.model), dict(request.training)
    resuming = (run_dir / CONFIG_FILE).is_file()
    if request.resume and not resuming:
        raise RunError(f"{run_dir}: nothing to resume (no {CONFIG_FILE}; is this a run directory?)")
    if not resuming and not is_empty_run_dir(run_dir):
        raise RunError(f"{run_dir} exists, is not empty and is not a run directory")
    try:
        stored = read_config(run_dir) if resuming else None
    except CheckpointError as e:
        raise RunError(str(e)) from None
    recorded = (stored or {}).get("data", {}).get("prepared")
    data_dir = data or (Path(recorded) if isinstance(recorded, str) and recorded else None)
    if data_dir is None:
        raise RunError("--data PREPARED_DIR is required" + (" (the run does not record its data)" if stored
                                                              else " for a new run"))
    manifest = rd.check_prepared(data_dir)
    try:
        toks = Tokenizers.load(data_dir)
    except DataError as e:
        raise RunError(str(e)) from None
    sizes = (toks.src.get_vocab_size(), toks.tgt.get_vocab_size(), toks.joint)
    fingerprint = toks.fingerprint()
    if stored:
        if stored.get("data", {}).get("tokenizer_fingerprint") != fingerprint:
            raise RunError(f"cannot resume: the tokenizer in {data_dir} differs from the one {run_dir} "
                           "was trained with")
        model_config, cfg, name = tc.resume_configs(stored, preset, config, model_flags, train_flags, *sizes)
    else:
        model_config, cfg, name = tc.resolve(preset, config, model_flags, train_flags, *sizes)
    rd.check_lengths(manifest, model_config, data_dir)
    run_id = (stored or {}).get("run_id") or uuid.uuid4().hex
    data_info = {"prepared": str(data_dir.resolve()), "src_lang": manifest["src_lang"],
                 "tgt_lang": manifest["tgt_lang"], "tokenizer_fingerprint": fingerprint}
    return _Plan(data_dir, toks, model_config, cfg, name, resuming, run_id, data_info)


def _start_and_fit(run_dir: Path, plan: _Plan, on_start, on_event, should_stop, warn) -> TrainResult:
    """Model and optimizer first; only then is anything written into the run directory."""
    cfg, model_config = plan.cfg, plan.model_config
    set_threads(cfg.threads)
    device = pick_device(cfg.device)
    data = rd.load_training_data(plan.data_dir, cfg)
    model, optimizer = rd.build(model_config, cfg, device)
    try:
        rd.write_run_config(run_dir, model_config, cfg, plan.data_info, plan.name, plan.run_id)
        if not plan.resuming:
            plan.toks.save(run_dir)
        state = rd.resume_state(run_dir, plan.run_id, model, optimizer, warn)
    except OSError as e:
        raise RunError(os_error_message(e)) from None
    on_start(RunStart(run_dir, plan.name, model_config, cfg, str(device),
                      sum(p.numel() for p in model.parameters()), state.step))
    tensorboard = rd.open_tensorboard(run_dir, cfg.tensorboard, warn)
    hooks = rd.RunHooks(run_dir, model, optimizer, cfg, plan.toks, *data, device, on_event, tensorboard,
                        plan.run_id)
    start_tokens, start_elapsed = state.tokens, state.elapsed
    try:
        state = fit(model, optimizer, cfg, state, hooks, should_stop=should_stop)
        note = rd.finish_model(run_dir, cfg, model, plan.run_id)
    except RuntimeError as e:
        if rd.is_out_of_memory(e):
            raise RunError(f"out of memory with --max-tokens {cfg.max_tokens}: try --max-tokens "
                           f"{max(cfg.max_tokens // 2, 1)} (with --accumulate 2 to keep the batch size)") from None
        raise
    except OSError as e:
        raise RunError(f"{os_error_message(e)}; {run_dir} keeps its last complete checkpoint") from None
    except ValueError as e:
        raise RunError(str(e)) from None
    except KeyboardInterrupt:
        raise RunError(f"interrupted twice: stopped without a new checkpoint; {run_dir} keeps the last one") from None
    finally:
        if tensorboard is not None:
            tensorboard.close()
    rate = (state.tokens - start_tokens) / max(state.elapsed - start_elapsed, 1e-9)
    return TrainResult(state, run_dir, best_from_metrics(run_dir), rate, note, plot_curves(run_dir))
