"""A training run on disk: the run directory, the hooks fit() calls, resume, final model."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from data.batching import SplitBatches, load_split
from data.errors import DataError
from data.subwords import DropoutSplit, Segmenter
from data.tokenizer import BOS_ID, EOS_ID, Tokenizers, decode
from transformer.checkpoint import (AVERAGE_FILE, CONFIG_FILE, MODEL_FILE, CheckpointError, average_weights,
                                    checkpoint_epoch, checkpoint_owner,
                                    list_checkpoints, load_checkpoint, recover_checkpoints, save_checkpoint,
                                    save_weights)
from transformer.config import ModelConfig
from transformer.decoding import greedy_search
from transformer.ema import moving_average
from transformer.files import atomic_write_text
from transformer.model import Transformer
from transformer.trainer import OneProcess, TrainConfig, TrainState
from transformer.training import adam, evaluate_loss, perplexity

from transformer_cli.errors import RunError, named
from transformer_cli.metrics import METRICS_FILE, truncate_metrics

SUBWORDS_DIR = "subwords"  # each epoch's BPE-dropout segmentation of the training pairs (data/subwords.py)


def check_prepared(data_dir: Path) -> dict:
    """The manifest of a prepared data directory; RunError unless `prepare` made it complete."""
    manifest = data_dir / "prepare.json"
    if not data_dir.is_dir():
        raise RunError(f"{data_dir}: prepared data directory not found (run 'transformer-cli prepare')")
    if not manifest.is_file() or not (data_dir / "dataset").is_dir():
        raise RunError(f"{data_dir}: incomplete prepared data (needs prepare.json and dataset/ "
                       "from 'transformer-cli prepare')")
    from transformer.json_text import loads  # a too deeply nested manifest is invalid JSON too

    try:
        found = loads(manifest.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{manifest}: not valid JSON ({e})") from None
    if not (isinstance(found, dict) and all(isinstance(found.get(k), str) for k in ("src_lang", "tgt_lang"))):
        raise RunError(f"{manifest}: not a manifest from 'transformer-cli prepare' (no src_lang/tgt_lang)")
    return found


def check_lengths(manifest: dict, model_config: ModelConfig, data_dir: Path) -> None:
    """The longest prepared pair (plus <s> or </s>) must fit the model's positions."""
    longest = 0
    for stats in (manifest.get("splits") or {}).values():
        for side in ("src_len", "tgt_len"):
            value = (stats.get(side) or {}).get("max", 0) if isinstance(stats, dict) else 0
            longest = max(longest, int(value) if isinstance(value, (int, float)) else 0)
    if longest + 1 > model_config.max_len:
        raise RunError(f"{data_dir} has pairs of up to {longest} tokens, which need {named('max_len')} >= "
                       f"{longest + 1} (the model has {model_config.max_len}); "
                       f"or prepare with --max-tokens {model_config.max_len - 1}", "max_len")


class RunHooks(OneProcess):
    """What fit() needs from the outside world: batches, validation, checkpoints and logs."""

    def __init__(self, run_dir: Path, model: Transformer, optimizer, cfg: TrainConfig, toks: Tokenizers,
                 train: SplitBatches, valid: SplitBatches, valid_refs: list[str], valid_src: list[str],
                 device: torch.device, on_event, tensorboard=None, run_id: str = "", scaler=None,
                 average=None) -> None:
        self.run_dir, self.model, self.optimizer, self.cfg, self.run_id = run_dir, model, optimizer, cfg, run_id
        self.scaler = scaler  # float16's loss scaler, saved with every checkpoint
        self.average = average  # the moving average of the weights (cfg.ema_decay > 0), or None
        self.toks, self.train, self.valid, self.device = toks, train, valid, device
        self.on_event, self.tensorboard = on_event, tensorboard
        self.sample_rows = validation_sample(valid.size, cfg.eval_samples)
        self.refs = [valid_refs[i] for i in self.sample_rows]
        self.srcs = [valid_src[i] for i in self.sample_rows]

    @property
    def published(self) -> Transformer:
        """The weights validated, kept as the best and made the final model: the moving average when
        there is one, else the trained weights themselves."""
        return self.model if self.average is None else self.average.module

    def end_step(self, step: int) -> None:
        """After update `step`: the moving average of the weights takes the new weights in."""
        if self.average is not None:
            self.average.update_parameters(self.model)

    def batches(self, epoch: int, start: int, rank: int = 0, ranks: int = 1):
        """The training batches of `epoch` from batch `start` (this rank's share), on the device."""
        if ranks == 1:
            self.train.ready(epoch)  # several ranks: rank 0 made it, ShardedHooks.batches
        for b in self.train.epoch(self.cfg.seed, epoch, start, rank, ranks):
            yield b.to(self.device)

    def translate_sample(self) -> list[str]:
        """Greedy translations of the validation sample, in its order."""
        hyps: dict[int, str] = {}
        for batch in self.valid.rows_batches(self.sample_rows):
            out = greedy_search(self.published, batch.src.to(self.device), BOS_ID, EOS_ID)
            for row, h in zip(batch.index.tolist(), out):
                hyps[row] = decode(self.toks.tgt, h.without_eos(EOS_ID))
        return [hyps[int(r)] for r in self.sample_rows]

    def evaluate(self, state: TrainState) -> dict:
        """Validation loss, perplexity, BLEU/chrF of the sample, three examples and the attention map."""
        from transformer_cli.scoring import score

        loss, nll = evaluate_loss(self.published, (b.to(self.device) for b in self.valid.epoch(None)),
                                  self.cfg.label_smoothing, self.cfg.precision)
        hyps = self.translate_sample()
        scores = score(hyps, self.refs)
        metrics = {"loss": loss, "nll": nll, "ppl": perplexity(nll), "bleu": scores.bleu, "chrf": scores.chrf}
        metrics["score"] = -loss if self.cfg.metric == "loss" else metrics[self.cfg.metric]
        metrics["samples"] = list(zip(self.srcs[:3], self.refs[:3], hyps[:3]))
        metrics["attention"] = self.attention_sample()
        return metrics

    def attention_sample(self) -> dict:
        """The last layer's cross-attention (mean of the heads) of one fixed validation sentence,
        teacher-forced on the model's greedy output: the map the live view redraws at each validation.
        {"src": source tokens, "out": output tokens (</s> last), "weights": rows out x src}."""
        from transformer_cli.translator import SearchOptions, Translator

        batch = next(iter(self.valid.rows_batches(self.sample_rows[:1])))
        row = batch.src[0].tolist()
        src_ids = row[: row.index(EOS_ID)] if EOS_ID in row else row  # the ids before </s> <pad>...
        translator = Translator(self.published, self.toks, self.device)
        out = translator.search([src_ids], SearchOptions(beam_size=1))[0][0].without_eos(EOS_ID)
        forced = translator.teacher_force(src_ids, out + [EOS_ID])
        weights = forced.maps.cross[-1].weights[0].float().mean(0)  # (out + 1, src)
        return {"src": forced.src_tokens, "out": forced.out_tokens, "weights": weights.double().tolist()}

    def checkpoint(self, state: TrainState, is_best: bool) -> None:
        """Save a checkpoint (and the best weights), then delete this run's checkpoints beyond what is kept."""
        checkpoints = self.run_dir / "checkpoints"
        target = checkpoints / f"step-{state.step:07d}"
        if target.exists() and checkpoint_owner(target) not in ("", self.run_id):
            raise CheckpointError(f"{target} belongs to another run; not replacing it")
        if is_best:  # before the checkpoint: a run killed between the two replays this step from the
            save_weights(self.published, self.run_dir / MODEL_FILE)  # previous checkpoint and writes it again
        save_checkpoint(target, self.model, self.optimizer, asdict(state), self.run_id, self.scaler, self.average)
        keep = {f"step-{state.best_step:07d}"}
        existing = own_checkpoints(self.run_dir, self.run_id)
        keep |= {p.name for p in existing[-max(self.cfg.keep_last, self.cfg.average_last, 1):]}
        for p in existing:
            if p.name not in keep:
                shutil.rmtree(p)
        if isinstance(self.train, DropoutSplit):  # the segmentations no kept checkpoint resumes in
            self.train.segmenter.prune(min(checkpoint_epoch(p) for p in own_checkpoints(self.run_dir, self.run_id)))

    def log(self, event: dict) -> None:
        """Append an event to metrics.jsonl (and TensorBoard), then pass it to the caller's callback."""
        with open(self.run_dir / METRICS_FILE, "a") as f:
            f.write(json.dumps({k: v for k, v in event.items() if k not in ("samples", "attention")},
                               ensure_ascii=False) + "\n")
        if self.tensorboard is not None:
            for k, v in event.items():
                if isinstance(v, float):
                    self.tensorboard.add_scalar(f"{event['event']}/{k}", v, event["step"])
        self.on_event(event)


def finish_model(run_dir: Path, cfg: TrainConfig, published: Transformer, run_id: str) -> str:
    """The run's model.safetensors: the mean of the last N checkpoints (of their moving averages when
    the run keeps one), or the best one. published: RunHooks.published, the weights validated."""
    checkpoints = own_checkpoints(run_dir, run_id)
    of = "the moving averages of " if cfg.ema_decay else ""
    if cfg.average_last and checkpoints:
        chosen = checkpoints[-cfg.average_last:]
        averaged = average_weights([p / (AVERAGE_FILE if cfg.ema_decay else MODEL_FILE) for p in chosen])
        published.load_state_dict(averaged, strict=False)
        save_weights(published, run_dir / MODEL_FILE)
        return f"mean of {of}the last {len(chosen)} checkpoints"
    if not (run_dir / MODEL_FILE).is_file():
        save_weights(published, run_dir / MODEL_FILE)
        return "moving average of the weights" if cfg.ema_decay else "last weights"
    return "moving average at the best checkpoint" if cfg.ema_decay else "best checkpoint"


def averaging(model: Transformer, cfg: TrainConfig):
    """The moving average of model's weights the run keeps (an AveragedModel), None without ema_decay."""
    return moving_average(model, cfg.ema_decay) if cfg.ema_decay else None


def build(model_config: ModelConfig, cfg: TrainConfig, device: torch.device):
    """The model and its optimizer; a size that cannot be allocated is a RunError (nothing is written
    before this succeeds)."""
    check_memory(model_config, device)
    torch.manual_seed(cfg.seed)
    try:
        model = Transformer(model_config).to(device)
        optimizer = adam(model.parameters(), (cfg.beta1, cfg.beta2), cfg.adam_eps, cfg.weight_decay)
    except (RuntimeError, MemoryError) as e:
        if isinstance(e, MemoryError) or is_out_of_memory(e):
            raise RunError(f"out of memory building a model of {model_config.parameter_count():,} "
                           f"parameters on {device}") from None
        raise
    return model, optimizer


BYTES_PER_PARAMETER = 16  # fp32 weights, gradients and Adam's two moments


def check_memory(model_config: ModelConfig, device: torch.device) -> None:
    """Refuse up front a model whose weights, gradients and optimizer state alone exceed the memory
    there is (activations come on top)."""
    parameters = model_config.parameter_count()
    need, have = parameters * BYTES_PER_PARAMETER, available_memory(device)
    if have is not None and need > have:
        raise RunError(f"the model is too large: {parameters:,} parameters need about "
                       f"{need / 2**30:.1f} GiB for weights, gradients and Adam state, and {device} has "
                       f"{have / 2**30:.1f} GiB available (lower --d-model, --d-ff or --layers)")


def available_memory(device: torch.device) -> int | None:
    """Bytes free on the device (CUDA) or available to the process (MemAvailable); None if unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def own_checkpoints(run_dir: Path, run_id: str) -> list[Path]:
    """This run's complete checkpoints, oldest first: a checkpoint is the run's own when its state
    records the run's id, or (made before ids were recorded) when it really lies inside the run
    directory. A symlinked checkpoints/ never lets resume or rotation touch another run's files."""
    inside = run_dir.resolve()

    def own(p: Path) -> bool:
        if p.is_symlink():
            return False
        owner = checkpoint_owner(p)
        return owner == run_id if owner else inside in p.resolve().parents
    return [p for p in list_checkpoints(run_dir / "checkpoints") if own(p)]


def clean_leftovers(run_dir: Path, warn) -> None:
    """What a killed or failed run left: partial checkpoints, half-written files."""
    for line in recover_checkpoints(run_dir / "checkpoints"):
        warn(line)
    for tmp in run_dir.glob(".*.tmp-*"):
        if tmp.is_file():
            tmp.unlink()


def resume_state(run_dir: Path, run_id: str, model, optimizer, warn, scaler=None, writer: bool = True,
                 average=None) -> TrainState:
    """The state to continue from (a fresh one for a new run), weights, optimizer, loss scaler and
    moving average loaded from the run's last checkpoint; the writer (rank 0) also drops metrics lines
    past it."""
    checkpoints = own_checkpoints(run_dir, run_id)
    if not checkpoints:
        if writer:
            truncate_metrics(run_dir, 0)  # killed before its first checkpoint: start over
        return TrainState()
    try:
        state = TrainState(**load_checkpoint(checkpoints[-1], model, optimizer, scaler, average))
    except CheckpointError as e:
        raise RunError(f"cannot resume: {e}") from None
    except TypeError as e:
        raise RunError(f"cannot resume: {checkpoints[-1]}: corrupt training state ({e})") from None
    state.stop_reason = ""
    broken = truncate_metrics(run_dir, state.step) if writer else 0
    if broken:
        warn(f"{METRICS_FILE}: dropped {broken} unreadable line(s) left by an interrupted write")
    return state


def validation_sample(size: int, eval_samples: int) -> np.ndarray:
    """The rows of the validation split that validation translates (and the length penalty is
    chosen on): eval_samples of them drawn with a fixed seed, sorted; all when 0 or >= size."""
    sample = eval_samples if 0 < eval_samples < size else size
    return np.sort(np.random.default_rng(0).choice(size, sample, replace=False))


def load_training_data(data_dir: Path, cfg: TrainConfig) -> tuple[SplitBatches, SplitBatches, list, list]:
    """(train batches, validation batches, validation references, validation sources)."""
    try:
        train = SplitBatches(load_split(data_dir, "train"), cfg.max_tokens)
        valid_ds = load_split(data_dir, "validation")
        valid = SplitBatches(valid_ds, cfg.max_tokens)
    except DataError as e:
        raise RunError.wrap(e) from None
    return train, valid, list(valid_ds["tgt"]), list(valid_ds["src"])


def training_batches(run_dir: Path, train: SplitBatches, toks: Tokenizers, cfg: TrainConfig,
                     model_config: ModelConfig) -> SplitBatches | DropoutSplit:
    """The training split as its epochs are batched: with BPE-dropout, each epoch re-segmented
    (RUN/subwords/), no side of a pair longer than the batches and the positions allow."""
    if cfg.bpe_dropout == 0:
        return train
    longest = min(cfg.max_tokens, model_config.max_len) - 1
    try:
        return DropoutSplit(Segmenter(train, toks, cfg.bpe_dropout, longest, run_dir / SUBWORDS_DIR))
    except DataError as e:
        raise RunError.wrap(e) from None


def open_tensorboard(run_dir: Path, enabled: bool, warn):
    """A SummaryWriter into RUN/tensorboard when enabled and installed, else None (warned)."""
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        warn("--tensorboard needs the tensorboard package (pip install tensorboard); not logging there")
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


def is_out_of_memory(e: BaseException) -> bool:
    """Whether an exception is an allocation failure (CUDA or CPU)."""
    text = str(e).lower()
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in text or "can't allocate memory" in text


def write_run_config(run_dir: Path, model_config: ModelConfig, cfg: TrainConfig, data: dict, preset: str,
                     run_id: str, world_size: int = 1, init_from: dict | None = None) -> None:
    """RUN/config.json: the model, the training recipe, the data, the preset, the run id, versions, and
    the model the run started from (init_from), if any."""
    from data.versions import library_versions

    config = {"model": model_config.to_dict(), "training": cfg.to_dict(), "data": data, "preset": preset,
              "run_id": run_id, "world_size": world_size,
              "versions": library_versions("torch")}
    if init_from is not None:
        config["init_from"] = init_from
    atomic_write_text(run_dir / CONFIG_FILE, json.dumps(config, indent=2, ensure_ascii=False) + "\n")

