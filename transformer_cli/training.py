"""train(): a prepared directory in, a trained run directory out. The library behind `transformer-cli train`;
a notebook calls it the same way, with callbacks instead of the terminal display."""

from __future__ import annotations

import uuid
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from data.errors import DataError
from data.tokenizer import Tokenizers
from transformer.checkpoint import CONFIG_FILE, CheckpointError, read_config
from transformer.config import ModelConfig
from transformer.trainer import TrainConfig, TrainState, fit
from transformer.training import grad_scaler
from transformer_cli import distributed as ddp
from transformer_cli import init_from as init
from transformer_cli import run_dir as rd
from transformer_cli import train_config as tc
from transformer_cli.errors import RunError, named, os_error_message
from transformer_cli.metrics import best_from_metrics, plot_curves
from transformer_cli.run_lock import RunLock, is_empty_run_dir
from transformer_cli.runtime import pick_device, precision_note, resolve_precision, set_threads
from transformer_cli.search_defaults import (CHOICE_BEAM, LENGTH_PENALTIES, SEARCH_FILE, LengthPenaltyChoice,
                                             choose_length_penalty, write_search)


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
    init_from: Path | None = None  # a new run starts from this model directory's weights and shape
    # (a run of train, or an imported model); `data` must be encoded with its tokenizer


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
    batches_per_epoch: int = 0  # training batches in one epoch (all processes together)
    init_from: Path | None = None  # the model directory the run started from, if any


@dataclass
class TrainResult:
    """What train() returns: where the run stopped and what it left in the run directory."""

    state: TrainState  # step, epoch, tokens, time, best score, why it stopped
    run_dir: Path
    best: dict | None  # the best validation event of metrics.jsonl
    tokens_per_s: float  # target tokens per second in this call (a resume counts its own part)
    model_note: str  # what model.safetensors holds: best checkpoint, mean of the last N, last weights
    curves: Path | None  # curves.png (None without matplotlib)
    search: LengthPenaltyChoice | None = None  # the length penalty chosen on validation (RUN/search.json)


def train(request: TrainRequest, on_start: Callable[[RunStart], None] = lambda s: None,
          on_event: Callable[[dict], None] = lambda e: None, should_stop: Callable[[], bool] = lambda: False,
          warn: Callable[[str], None] = lambda m: None) -> TrainResult:
    """Train (or resume) the run in request.out. on_event gets every log and validation event (the
    dicts of metrics.jsonl, validation samples included); should_stop() is polled after each step
    (True: checkpoint and stop). Problems are RunError with a one-sentence message.

    Launched by torchrun (WORLD_SIZE > 1), every process calls train() and they train together with
    DistributedDataParallel; only rank 0 takes the run lock, writes, and calls the callbacks."""
    world = ddp.world_from_env()
    with RunLock(request.out) if world.is_main else nullcontext():
        plan = plan_run(request, world.size)
        device = ddp.start(world, pick_device(plan.cfg.device))
        try:
            plan = replace(plan, run_id=ddp.rank0_run_id(plan.run_id, world, device))
            ddp.barrier(world)  # every rank has read the run before rank 0 writes anything
            if not world.is_main:
                on_start, on_event, warn = (lambda s: None), (lambda e: None), (lambda m: None)
            return _start_and_fit(request.out, plan, world, device, on_start, on_event, should_stop, warn)
        finally:
            ddp.stop(world)


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
    init_from: dict | None = None  # what config.json records of the model the run started from


def plan_run(request: TrainRequest, world_size: int = 1) -> _Plan:
    """Everything a run needs, read and checked; nothing is written. A run resumes only with the
    number of processes it was trained with (its batch order and updates depend on it)."""
    run_dir, preset, config = request.out, request.preset, request.config_file
    model_flags, train_flags = dict(request.model), dict(request.training)
    stored = _stored_run(request)
    data_dir = _data_dir(request.data, stored)
    manifest = rd.check_prepared(data_dir)
    try:
        toks = Tokenizers.load(data_dir)
    except DataError as e:
        raise RunError.wrap(e) from None
    sizes = (toks.src.get_vocab_size(), toks.tgt.get_vocab_size(), toks.joint)
    fingerprint = toks.fingerprint()
    if stored:
        check_world_size(stored, world_size, run_dir)
        started_from = init.resumed_record(stored, request.init_from, run_dir)
        if stored.get("data", {}).get("tokenizer_fingerprint") != fingerprint:
            raise RunError(f"cannot resume: the tokenizer in {data_dir} differs from the one {run_dir} "
                           "was trained with")
        model_config, cfg, name = tc.resume_configs(stored, preset, config, model_flags, train_flags, *sizes)
    elif request.init_from is not None:
        source = init.read_source(request.init_from)
        init.check_data(source, toks, data_dir)
        model_config, cfg, name = tc.init_from_configs(source.model, preset, config, model_flags, train_flags)
        started_from = source.record
    else:
        model_config, cfg, name = tc.resolve(preset, config, model_flags, train_flags, *sizes)
        started_from = None
    rd.check_lengths(manifest, model_config, data_dir)
    run_id = (stored or {}).get("run_id") or uuid.uuid4().hex
    data_info = {"prepared": str(data_dir.resolve()), "src_lang": manifest["src_lang"],
                 "tgt_lang": manifest["tgt_lang"], "tokenizer_fingerprint": fingerprint}
    return _Plan(data_dir, toks, model_config, cfg, name, stored is not None, run_id, data_info, started_from)


def _stored_run(request: TrainRequest) -> dict | None:
    """The config.json of the run in request.out (None for a new run); RunError if out is neither."""
    run_dir = request.out
    resuming = (run_dir / CONFIG_FILE).is_file()
    if request.resume and not resuming:
        raise RunError(f"{run_dir}: nothing to resume (no {CONFIG_FILE}; is this a run directory?)")
    if not resuming and not is_empty_run_dir(run_dir):
        raise RunError(f"{run_dir} exists, is not empty and is not a run directory")
    try:
        return read_config(run_dir) if resuming else None
    except CheckpointError as e:
        raise RunError.wrap(e) from None


def _data_dir(data: Path | None, stored: dict | None) -> Path:
    """The prepared data: as given, else the one the resumed run records."""
    recorded = (stored or {}).get("data", {}).get("prepared")
    data_dir = data or (Path(recorded) if isinstance(recorded, str) and recorded else None)
    if data_dir is None:
        raise RunError(f"{named('data')} PREPARED_DIR is required" + (" (the run does not record its data)"
                                                                     if stored else " for a new run"), "data")
    return data_dir


def check_world_size(stored: dict, world_size: int, run_dir: Path) -> None:
    """Refuse to resume run_dir (its config.json `stored`) with another number of processes than it had."""
    recorded = stored.get("world_size", 1)
    if recorded != world_size:
        how = "without torchrun" if recorded == 1 else f"with torchrun --nproc-per-node {recorded} (or that many ranks in all)"
        raise RunError(f"cannot resume: {run_dir} was trained by {recorded} process(es), this launch has "
                       f"{world_size}; resume {how}")


def _write_and_resume(run_dir: Path, plan: _Plan, world: ddp.World, device, model, optimizer, scaler,
                      warn, average=None) -> TrainState:
    """Rank 0 writes config.json and the tokenizer and cleans up what a killed run left; then every
    rank loads the same last checkpoint (a fresh state for a new run)."""
    try:
        if world.is_main:
            rd.write_run_config(run_dir, plan.model_config, plan.cfg, plan.data_info, plan.name, plan.run_id,
                                world.size, plan.init_from)
            if not plan.resuming:
                plan.toks.save(run_dir)
            rd.clean_leftovers(run_dir, warn)
        ddp.barrier(world)
        state = rd.resume_state(run_dir, plan.run_id, model, optimizer, warn, scaler, writer=world.is_main,
                                average=average)
        ddp.check_same_start(state, world, device)
        return state
    except OSError as e:
        raise RunError(os_error_message(e)) from None


def _say_surprises(cfg: TrainConfig, device, warn, plan: _Plan) -> None:
    """Before the first step, what these settings do that the user may not expect."""
    fine_tuning = plan.init_from is not None and not plan.resuming
    for note in (precision_note(cfg.precision, device), tc.retention_note(cfg),
                 tc.fine_tuning_note(cfg, plan.model_config.d_model) if fine_tuning else ""):
        if note:
            warn(note)


def _first_epoch(train, world: ddp.World, epoch: int):
    """The training batches with the epoch a run starts in made (BPE-dropout's segmentation: by rank
    0, before any rank plans it)."""
    try:
        ddp.made_by_rank0(world, lambda: train.ready(epoch))
    except OSError as e:
        raise RunError(os_error_message(e)) from None
    return train


def _build(run_dir: Path, plan: _Plan, cfg: TrainConfig, device):
    """The model and optimizer; a run that starts from another model and has no checkpoint of its own
    yet gets that model's weights (on every rank: they all start alike). Before anything is written."""
    model, optimizer = rd.build(plan.model_config, cfg, device)
    if plan.init_from is not None and not rd.own_checkpoints(run_dir, plan.run_id):
        init.load_initial_weights(model, plan.init_from)
    return model, optimizer


def _start_and_fit(run_dir: Path, plan: _Plan, world: ddp.World, device, on_start, on_event, should_stop,
                   warn) -> TrainResult:
    """Model and optimizer first; only then is anything written into the run directory (by rank 0)."""
    cfg = replace(plan.cfg, precision=resolve_precision(plan.cfg.precision, device))  # "auto" -> bf16 | fp32
    _say_surprises(cfg, device, warn, plan)
    set_threads(cfg.threads)
    data = rd.load_training_data(plan.data_dir, cfg)
    train = rd.training_batches(run_dir, data[0], plan.toks, cfg, plan.model_config)  # refused before any write
    model, optimizer = _build(run_dir, plan, cfg, device)
    scaler = grad_scaler(device, cfg.precision)
    average = rd.averaging(model, cfg)
    state = _write_and_resume(run_dir, plan, world, device, model, optimizer, scaler, warn, average)
    data = (_first_epoch(train, world, state.epoch), *data[1:])
    on_start(RunStart(run_dir, plan.name, plan.model_config, cfg, str(device), sum(p.numel() for p in model.parameters()),
                      state.step, len(data[0].plan(cfg.seed, state.epoch)),
                      Path(plan.init_from["path"]) if plan.init_from else None))
    tensorboard = rd.open_tensorboard(run_dir, cfg.tensorboard, warn) if world.is_main else None
    hooks = rd.RunHooks(run_dir, model, optimizer, cfg, plan.toks, *data, device, on_event, tensorboard,
                        plan.run_id, scaler, average)
    validation = (hooks.srcs, hooks.refs)  # the sample validation translates: the length penalty's too
    if world.size > 1:
        hooks = ddp.ShardedHooks(hooks, world)
    if cfg.compile:
        model.compile()  # in place: state_dict keys and checkpoints stay the plain model's
    start_tokens, start_elapsed = state.tokens, state.elapsed
    try:
        state = fit(ddp.wrap(model, world, device), optimizer, cfg, state, hooks, should_stop, scaler)
        if world.size > 1:
            _log_replicas(model, world, hooks, state.step)
        published = model if average is None else average.module
        note = rd.finish_model(run_dir, cfg, published, plan.run_id) if world.is_main else ""
    except RuntimeError as e:
        if rd.is_out_of_memory(e):
            raise RunError(f"out of memory with {named('max_tokens')} {cfg.max_tokens}: try {named('max_tokens')} "
                           f"{max(cfg.max_tokens // 2, 1)} (with {named('accumulate')} 2 to keep the batch size)",
                           "max_tokens", "accumulate") from None
        raise
    except OSError as e:
        raise RunError(f"{os_error_message(e)}; {run_dir} keeps its last complete checkpoint") from None
    except ValueError as e:
        raise RunError.wrap(e) from None
    except KeyboardInterrupt:
        raise RunError(f"interrupted twice: stopped without a new checkpoint; {run_dir} keeps the last one") from None
    finally:
        if tensorboard is not None:
            tensorboard.close()
    if not world.is_main:
        return TrainResult(state, run_dir, None, 0.0, "", None)
    rate = (state.tokens - start_tokens) / max(state.elapsed - start_elapsed, 1e-9)
    choose = cfg.choose_length_penalty and state.stop_reason != "interrupted"  # not after a stop request
    chosen = choose_search(run_dir, device, *validation, on_event, should_stop) if choose else None
    return TrainResult(state, run_dir, best_from_metrics(run_dir), rate, note, plot_curves(run_dir), chosen)


def _log_replicas(model, world: ddp.World, hooks, step: int) -> None:
    """After a DDP run: whether every process ends with the same weights, into metrics.jsonl."""
    prints = ddp.replica_fingerprints(model, world)
    hooks.log({"event": "replicas", "step": step, "world_size": world.size, "identical": len(set(prints)) == 1,
               "fingerprints": prints})


def choose_search(run_dir: Path, device, sources: list[str], references: list[str], on_event,
                  should_stop: Callable[[], bool]) -> LengthPenaltyChoice | None:
    """The run's model as translate loads it, its length penalty chosen on the validation sample
    (transformer_cli/search_defaults.py) and written to RUN/search.json; the file of an earlier
    model is removed first, and none is written when should_stop() turns True meanwhile (None)."""
    from transformer_cli.translator import load_run

    try:
        (run_dir / SEARCH_FILE).unlink(missing_ok=True)
        on_event({"event": "choosing", "sentences": len(sources), "beam_size": CHOICE_BEAM,
                  "length_penalties": list(LENGTH_PENALTIES)})
        chosen = choose_length_penalty(load_run(run_dir, str(device)), sources, references, should_stop=should_stop)
        if chosen is not None:
            write_search(run_dir, {"length_penalty": chosen.length_penalty, "length_style": "gnmt"}, chosen.record())
    except OSError as e:
        raise RunError(f"{os_error_message(e)}; the model is saved, its length penalty was not chosen") from None
    return chosen
