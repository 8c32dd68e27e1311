"""`transformer-cli train`: train the Transformer on a prepared directory; resume exactly."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Optional

import typer

from cli import console
from cli.errors import UserError, fail, os_error_message

O = typer.Option


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_cli(
        data: Optional[Path] = O(None, "--data", help="Output directory of 'prepare'."),
        out: Optional[Path] = O(None, "--out", "-o", help="Run directory (an existing one is resumed)."),
        resume: Optional[Path] = O(None, "--resume", help="Continue the run in this directory."),
        preset: Optional[str] = O(None, "--preset", help="tiny | small | base | big (default small)."),
        config: Optional[Path] = O(None, "--config", help="TOML or YAML file: preset, [model], [training]."),
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
        schedule: Optional[str] = O(None, "--schedule", help="noam | inverse_sqrt | constant",
                                    rich_help_panel="Training"),
        lr_factor: Optional[float] = O(None, "--lr-factor", help="noam factor.", rich_help_panel="Training"),
        lr: Optional[float] = O(None, "--lr", help="Peak rate (inverse_sqrt, constant).", rich_help_panel="Training"),
        warmup: Optional[int] = O(None, "--warmup", rich_help_panel="Training"),
        clip_norm: Optional[float] = O(None, "--clip-norm", rich_help_panel="Training"),
        precision: Optional[str] = O(None, "--precision", help="fp32 | bf16", rich_help_panel="Training"),
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
        max_steps: Optional[int] = O(None, "--max-steps", rich_help_panel="Stopping"),
        max_epochs: Optional[int] = O(None, "--max-epochs", rich_help_panel="Stopping"),
        max_time: Optional[float] = O(None, "--max-time", help="Seconds.", rich_help_panel="Stopping"),
        tensorboard: Optional[bool] = O(None, "--tensorboard/--no-tensorboard", rich_help_panel="Validation"),
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
        skip = model_keys | {"data", "out", "resume", "preset", "config", "layers", "encoder_layers", "decoder_layers"}
        train_flags = {k: v for k, v in given.items() if k not in skip and v is not None}
        try:
            run(data, out, resume, preset, config, model_flags, train_flags)
        except UserError as e:
            fail(str(e))


def run(data: Path | None, out: Path | None, resume: Path | None, preset: str | None, config: Path | None,
        model_flags: dict, train_flags: dict) -> None:
    from cli.run_lock import RunLock

    if resume and out and resume != out:
        raise UserError("--resume and --out name different directories")
    run_dir = resume or out
    if run_dir is None:
        raise UserError("--out RUN_DIR (a new run) or --resume RUN_DIR is required")
    with RunLock(run_dir):
        plan = plan_run(run_dir, data, resume is not None, preset, config, model_flags, train_flags)
        start_and_train(run_dir, plan)


def plan_run(run_dir: Path, data: Path | None, resume: bool, preset: str | None, config: Path | None,
             model_flags: dict, train_flags: dict) -> dict:
    """Everything a run needs, read and checked; nothing is written."""
    from data.errors import DataError
    from data.tokenizer import Tokenizers
    from transformer.checkpoint import CONFIG_FILE, CheckpointError, read_config

    from cli import train_config as tc
    from cli import train_run as tr
    from cli.run_lock import is_empty_run_dir

    resuming = (run_dir / CONFIG_FILE).is_file()
    if resume and not resuming:
        raise UserError(f"{run_dir}: nothing to resume (no {CONFIG_FILE}; is this a run directory?)")
    if not resuming and not is_empty_run_dir(run_dir):
        raise UserError(f"{run_dir} exists, is not empty and is not a run directory")
    try:
        stored = read_config(run_dir) if resuming else None
    except CheckpointError as e:
        raise UserError(str(e)) from None
    recorded = (stored or {}).get("data", {}).get("prepared")
    data_dir = data or (Path(recorded) if isinstance(recorded, str) and recorded else None)
    if data_dir is None:
        raise UserError("--data PREPARED_DIR is required" + (" (the run does not record its data)" if stored
                                                              else " for a new run"))
    manifest = tr.check_prepared(data_dir)
    try:
        toks = Tokenizers.load(data_dir)
    except DataError as e:
        raise UserError(str(e)) from None
    sizes = (toks.src.get_vocab_size(), toks.tgt.get_vocab_size(), toks.joint)
    if stored:
        if stored.get("data", {}).get("tokenizer_fingerprint") != toks.fingerprint():
            raise UserError(f"cannot resume: the tokenizer in {data_dir} differs from the one {run_dir} "
                            "was trained with")
        model_config, cfg, name = tc.resume_configs(stored, preset, config, model_flags, train_flags, *sizes)
    else:
        model_config, cfg, name = tc.resolve(preset, config, model_flags, train_flags, *sizes)
    tr.check_lengths(manifest, model_config, data_dir)
    run_id = (stored or {}).get("run_id") or uuid.uuid4().hex
    data_info = {"prepared": str(data_dir.resolve()), "src_lang": manifest["src_lang"],
                 "tgt_lang": manifest["tgt_lang"], "tokenizer_fingerprint": toks.fingerprint()}
    return {"data_dir": data_dir, "toks": toks, "model_config": model_config, "cfg": cfg, "name": name,
            "resuming": resuming, "run_id": run_id, "data_info": data_info}


def start_and_train(run_dir: Path, plan: dict) -> None:
    """Model and optimizer first; only then is anything written into the run directory."""
    from cli import train_run as tr
    from cli.runtime import pick_device, set_threads

    cfg, model_config = plan["cfg"], plan["model_config"]
    set_threads(cfg.threads)
    device = pick_device(cfg.device)
    data = tr.load_training_data(plan["data_dir"], cfg)
    model, optimizer = tr.build(model_config, cfg, device)
    err = console.err
    try:
        tr.write_run_config(run_dir, model_config, cfg, plan["data_info"], plan["name"], plan["run_id"])
        if not plan["resuming"]:
            plan["toks"].save(run_dir)
        state = tr.resume_state(run_dir, plan["run_id"], model, optimizer,
                                lambda m: err.print(f"note: {m}", markup=False, soft_wrap=True))
    except OSError as e:
        raise UserError(os_error_message(e)) from None
    err.print(f"[bold]{'resuming' if state.step else 'training'}[/] preset {plan['name']} on {device}, "
              f"{sum(p.numel() for p in model.parameters()):,} parameters, from step {state.step}; "
              f"run directory {run_dir}")
    from cli import train_config as tc

    err.print(tc.describe(model_config, cfg), markup=False, highlight=False)
    train_and_report(run_dir, plan, model, optimizer, state, device, data)


def train_and_report(run_dir: Path, plan: dict, model, optimizer, state, device, data) -> None:
    from cli import train_run as tr
    from cli.train_display import LiveDisplay, PlainDisplay, summary_table

    cfg, err, out_console = plan["cfg"], console.err, console.out
    display = (LiveDisplay(out_console, cfg.max_steps, state.step) if out_console.is_terminal
               else PlainDisplay(out_console, cfg.max_steps))
    tensorboard = tr.open_tensorboard(run_dir, cfg.tensorboard, lambda m: err.print(f"warning: {m}"))
    hooks = tr.RunHooks(run_dir, model, optimizer, cfg, plan["toks"], *data, device, display, tensorboard,
                        plan["run_id"])
    start_tokens, start_elapsed = state.tokens, state.elapsed
    try:
        with tr.StopFlag() as stop, display:
            state = tr.fit(model, optimizer, cfg, state, hooks, should_stop=stop)
        note = tr.finish_model(run_dir, cfg, model, plan["run_id"])
    except RuntimeError as e:
        if tr.is_out_of_memory(e):
            raise UserError(f"out of memory with --max-tokens {cfg.max_tokens}: try --max-tokens "
                            f"{max(cfg.max_tokens // 2, 1)} (with --accumulate 2 to keep the batch size)") from None
        raise
    except OSError as e:
        raise UserError(f"{os_error_message(e)}; {run_dir} keeps its last complete checkpoint") from None
    except ValueError as e:
        raise UserError(str(e)) from None
    except KeyboardInterrupt:
        raise UserError(f"interrupted twice: stopped without a new checkpoint; {run_dir} keeps the last one") from None
    finally:
        if tensorboard is not None:
            tensorboard.close()
    plot = tr.plot_curves(run_dir)
    rate = (state.tokens - start_tokens) / max(state.elapsed - start_elapsed, 1e-9)
    out_console.print(summary_table(state, str(run_dir), tr.best_from_metrics(run_dir), rate, note))
    if plot is None:
        err.print("note: install matplotlib (pip install 'transformer-cli[plot]') for curves.png", markup=False)
    if state.stop_reason == "interrupted":
        err.print(f"interrupted: checkpoint saved; continue with transformer-cli train --resume {run_dir}",
                  soft_wrap=True)
        raise typer.Exit(130)
