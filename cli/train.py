"""`transformer-cli train`: train the Transformer on a prepared directory; resume exactly."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Optional

import typer

from cli import console
from cli.errors import UserError, fail, interruption
from transformer_cli.errors import Terminated

O = typer.Option


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_cli(
        data: Optional[Path] = O(None, "--data", help="Output directory of 'prepare'."),
        out: Optional[Path] = O(None, "--out", "-o", help="Run directory (an existing one is resumed)."),
        resume: Optional[Path] = O(None, "--resume", help="Continue the run in this directory."),
        preset: Optional[str] = O(None, "--preset", help="tiny | small | base | big (default small)."),
        config: Optional[Path] = O(None, "--config", help=r"TOML or YAML file: preset, \[model], \[training]."),
        init_from: Optional[Path] = O(None, "--init-from", help="Fine-tune: start a new run from this model "
                                      "directory's weights and shape (a train run, or an imported model); --data "
                                      "must be prepared with 'prepare --tokenizer' of it; only --dropout and "
                                      "--attention-dropout of the model may change. Fresh optimizer and schedule: "
                                      "use a small rate with a short warm-up, e.g. --schedule inverse_sqrt --lr 1e-4 "
                                      "--warmup 100."),
        d_model: Optional[int] = O(None, "--d-model", rich_help_panel="Model"),
        n_heads: Optional[int] = O(None, "--heads", rich_help_panel="Model"),
        d_ff: Optional[int] = O(None, "--d-ff", rich_help_panel="Model"),
        layers: Optional[int] = O(None, "--layers", help="Encoder and decoder layers.", rich_help_panel="Model"),
        encoder_layers: Optional[int] = O(None, "--encoder-layers", rich_help_panel="Model"),
        decoder_layers: Optional[int] = O(None, "--decoder-layers", rich_help_panel="Model"),
        dropout: Optional[float] = O(None, "--dropout", rich_help_panel="Model"),
        attention_dropout: Optional[float] = O(None, "--attention-dropout", rich_help_panel="Model"),
        norm: Optional[str] = O(None, "--norm", help="post (paper) | pre", rich_help_panel="Model"),
        tie_output: Optional[bool] = O(None, "--tie-output/--no-tie-output", rich_help_panel="Model"),
        max_len: Optional[int] = O(None, "--max-len", rich_help_panel="Model"),
        max_tokens: Optional[int] = O(None, "--max-tokens", help="Tokens per batch.", rich_help_panel="Training"),
        accumulate: Optional[int] = O(None, "--accumulate", help="Batches per update.", rich_help_panel="Training"),
        label_smoothing: Optional[float] = O(None, "--label-smoothing", rich_help_panel="Training"),
        weight_decay: Optional[float] = O(None, "--weight-decay", help="AdamW's decoupled decay of the weight "
                                          "matrices, e.g. 0.01 (0 = Adam, the paper's).", rich_help_panel="Training"),
        r_drop: Optional[float] = O(None, "--r-drop", help="R-Drop's alpha: each batch runs twice and alpha x the KL "
                                    "between the two predictions joins the loss, e.g. 5 (0 = off; twice the compute "
                                    "per update).", rich_help_panel="Training"),
        r_drop_from: Optional[int] = O(None, "--r-drop-from", help="Plain updates before --r-drop starts "
                                       "(default 0: from the first).", rich_help_panel="Training"),
        bpe_dropout: Optional[float] = O(None, "--bpe-dropout", help="Re-segment the training pairs every epoch, "
                                         "skipping each BPE merge with this probability (e.g. 0.1; 0 = off).",
                                         rich_help_panel="Training"),
        schedule: Optional[str] = O(None, "--schedule", help="noam | inverse_sqrt | constant",
                                    rich_help_panel="Training"),
        lr_factor: Optional[float] = O(None, "--lr-factor", help="noam factor.", rich_help_panel="Training"),
        lr: Optional[float] = O(None, "--lr", help="Peak rate (inverse_sqrt, constant).", rich_help_panel="Training"),
        warmup: Optional[int] = O(None, "--warmup", rich_help_panel="Training"),
        cooldown: Optional[float] = O(None, "--cooldown", help="Over this last fraction of the budget (--max-time, "
                                      "or --max-steps if sooner) the rate falls linearly to 0, e.g. 0.2 (0 = off).",
                                      rich_help_panel="Training"),
        clip_norm: Optional[float] = O(None, "--clip-norm", rich_help_panel="Training"),
        precision: Optional[str] = O(None, "--precision", help="fp32 | bf16 | fp16 (fp16 with a loss scaler) | "
                                     "auto (bf16 where the hardware has it)",
                                     rich_help_panel="Training"),
        compile: Optional[bool] = O(None, "--compile/--no-compile", help="torch.compile the model (CUDA).",
                                    rich_help_panel="Training"),
        device: Optional[str] = O(None, "--device", help="auto | cpu | cuda", rich_help_panel="Training"),
        threads: Optional[int] = O(None, "--threads", rich_help_panel="Training"),
        seed: Optional[int] = O(None, "--seed", rich_help_panel="Training"),
        eval_every: Optional[int] = O(None, "--eval-every", rich_help_panel="Validation"),
        eval_samples: Optional[int] = O(None, "--eval-samples", help="Validation sentences for BLEU/chrF (0 = all).",
                                        rich_help_panel="Validation"),
        log_every: Optional[int] = O(None, "--log-every", rich_help_panel="Validation"),
        metric: Optional[str] = O(None, "--metric", help="bleu | chrf | loss", rich_help_panel="Validation"),
        keep_last: Optional[int] = O(None, "--keep-last", rich_help_panel="Validation"),
        patience: Optional[int] = O(None, "--patience", rich_help_panel="Validation"),
        average_last: Optional[int] = O(None, "--average-last", rich_help_panel="Validation"),
        ema_decay: Optional[float] = O(None, "--ema-decay", help="Validate and keep a moving average of the "
                                       "weights (e.g. 0.999; 0 = off).", rich_help_panel="Validation"),
        max_steps: Optional[int] = O(None, "--max-steps", rich_help_panel="Stopping"),
        max_epochs: Optional[int] = O(None, "--max-epochs", rich_help_panel="Stopping"),
        max_time: Optional[str] = O(None, "--max-time", help="40m, 1h30m, 90s or plain seconds.",
                                    rich_help_panel="Stopping"),
        tensorboard: Optional[bool] = O(None, "--tensorboard/--no-tensorboard", rich_help_panel="Validation"),
        choose_length_penalty: Optional[bool] = O(None, "--choose-length-penalty/--no-choose-length-penalty",
                                                  help="After the last step, pick the length penalty with the best "
                                                  "validation BLEU (beam 5) for translate: RUN/search.json.",
                                                  rich_help_panel="Validation"),
    ) -> None:
        """Train the Transformer on a directory made by 'prepare'."""
        given = dict(locals())
        model_keys = {"d_model", "n_heads", "d_ff", "dropout", "attention_dropout", "norm", "tie_output", "max_len"}
        model_flags = {k: given[k] for k in model_keys if given[k] is not None}
        if layers is not None:
            model_flags.update(n_encoder_layers=layers, n_decoder_layers=layers)
        if encoder_layers is not None:
            model_flags["n_encoder_layers"] = encoder_layers
        if decoder_layers is not None:
            model_flags["n_decoder_layers"] = decoder_layers
        skip = model_keys | {"data", "out", "resume", "preset", "config", "init_from", "layers", "encoder_layers",
                             "decoder_layers"}
        train_flags = {k: v for k, v in given.items() if k not in skip and v is not None}
        try:
            if max_time is not None:
                train_flags["max_time"] = parse_duration(max_time)
            run(data, out, resume, preset, config, model_flags, train_flags, init_from)
        except UserError as e:
            fail(e)


def run(data: Path | None, out: Path | None, resume: Path | None, preset: str | None, config: Path | None,
        model_flags: dict, train_flags: dict, init_from: Path | None = None) -> None:
    from transformer_cli.distributed import world_from_env
    from transformer_cli.runtime import TRAIN_KERNEL_CACHE, bound_kernel_cache, reuse_freed_memory
    from transformer_cli.training import TrainRequest, train

    from cli.train_display import TrainView, summary_table

    if resume and out and resume != out:
        raise UserError("--resume and --out name different directories")
    run_dir = resume or out
    if run_dir is None:
        raise UserError("--out RUN_DIR (a new run) or --resume RUN_DIR is required")
    request = TrainRequest(out=run_dir, data=data, resume=resume is not None, preset=preset, config_file=config,
                           model=model_flags, training=train_flags, init_from=init_from)
    err = console.err
    reuse_freed_memory()
    bound_kernel_cache(TRAIN_KERNEL_CACHE)
    if not world_from_env().is_main:  # torchrun: rank 0 shows the run, the others train quietly
        with StopFlag() as stop:
            train(request, should_stop=stop)
        return
    with StopFlag() as stop, TrainView(console.out, err) as view:
        result = train(request, on_start=view.start, on_event=view.update, should_stop=stop,
                       warn=lambda m: err.print(f"note: {m}", markup=False, soft_wrap=True))
    console.out.print(summary_table(result.state, str(run_dir), result.best, result.tokens_per_s, result.model_note,
                                    result.search))
    if result.curves is None:
        err.print("note: install matplotlib (pip install 'transformer-cli[plot]') for curves.png", markup=False)
    if result.state.stop_reason == "interrupted":
        word, code = interruption(stop.stopped_by())
        err.print(f"{word}: checkpoint saved; continue with transformer-cli train --resume {run_dir}",
                  soft_wrap=True)
        raise typer.Exit(code)


def parse_duration(text: str) -> float:
    """'40m', '1h30m', '90s', '2h', '1.5h' or plain seconds ('2400') -> seconds."""
    import math
    import re

    value = text.strip().lower()
    parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?", value)
    if not value or parts is None:
        raise UserError(f"--max-time {text!r}: expected a duration such as 40m, 1h30m, 90s or 2400")
    hours, minutes, seconds = (float(p) if p else 0.0 for p in parts.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if not math.isfinite(total):
        raise UserError(f"--max-time {text!r} is not a finite duration")
    return total


class StopFlag:
    """The first Ctrl-C or SIGTERM (docker stop, Slurm, systemd; torchrun passes it on to every rank)
    asks training to checkpoint and stop after the current step; a second one aborts."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None  # the signal that asked to stop
        self.previous: dict = {}

    def __enter__(self) -> "StopFlag":
        self.previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def __call__(self) -> bool:
        return self.signum is not None

    def stopped_by(self) -> KeyboardInterrupt:
        """The stop request as the exception the signal raises elsewhere (for its wording and exit code)."""
        return Terminated() if self.signum == signal.SIGTERM else KeyboardInterrupt()
