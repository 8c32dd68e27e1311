"""Resolve the effective model and training configuration: preset < --config file < flags."""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import replace
from pathlib import Path

from transformer.config import ModelConfig
from transformer.presets import PRESETS
from transformer.trainer import TrainConfig

from transformer_cli.errors import RunError, named

# fields a resumed run may change: where and how long it runs, not what it computes
RESUMABLE_CHANGES = {"max_steps", "max_epochs", "max_time", "patience", "device", "threads", "tensorboard",
                     "log_every", "compile"}
MODEL_FIELDS = {f.name for f in dataclasses.fields(ModelConfig)} - {"src_vocab_size", "tgt_vocab_size",
                                                                     "pad_id", "share_embeddings"}
TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


def read_config_file(path: Path) -> dict:
    """A TOML or YAML file with optional `preset`, and [model] / [training] tables."""
    if not path.is_file():
        raise RunError(f"{path}: config file not found")
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise RunError(f"{path}: YAML configs need PyYAML (pip install pyyaml), or use TOML") from None
            data = yaml.safe_load(text) or {}
        else:
            data = tomllib.loads(text)
    except RunError:
        raise
    except Exception as e:  # noqa: BLE001 - tomllib/yaml parse errors
        raise RunError(f"{path}: cannot parse ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise RunError(f"{path}: expected a table of settings")
    unknown = sorted(set(data) - {"preset", "model", "training"})
    if unknown:
        raise RunError(f"{path}: unknown keys {', '.join(unknown)} (expected preset, [model], [training])")
    for section, allowed in (("model", MODEL_FIELDS), ("training", TRAIN_FIELDS)):
        bad = sorted(set(data.get(section, {})) - allowed)
        if bad:
            raise RunError(f"{path}: unknown [{section}] keys: {', '.join(bad)}")
    return data


def resolve(preset: str | None, config_file: Path | None, model_flags: dict, train_flags: dict,
            src_vocab: int, tgt_vocab: int, joint: bool) -> tuple[ModelConfig, TrainConfig, str]:
    """Build the configs of a new run; `*_flags` hold only the options the user gave."""
    file, name, train_config = recipe(preset, config_file, train_flags)
    model = {**PRESETS[name]["model"], **file.get("model", {}), **model_flags}
    try:
        model_config = ModelConfig(src_vocab_size=src_vocab, tgt_vocab_size=tgt_vocab, pad_id=0,
                                   share_embeddings=joint, **model)
    except (TypeError, ValueError) as e:
        raise RunError(f"impossible configuration: {e}") from None
    return model_config, train_config, name


def recipe(preset: str | None, config_file: Path | None, train_flags: dict) -> tuple[dict, str, TrainConfig]:
    """(the config file's tables, the preset's name, the TrainConfig): preset < config file < flags."""
    file = read_config_file(config_file) if config_file else {}
    name = preset or file.get("preset") or "small"
    if name not in PRESETS:
        raise RunError(f"unknown preset '{name}': choose one of {', '.join(PRESETS)}")
    try:
        train_config = TrainConfig(**{**PRESETS[name]["training"], **file.get("training", {}), **train_flags})
    except (TypeError, ValueError) as e:
        raise RunError(f"impossible configuration: {e}") from None
    return file, name, train_config


# model fields a run that starts from another model may set: how it trains, not what it computes
INIT_FROM_CHANGES = {"dropout", "attention_dropout"}


def init_from_configs(source_model: dict, preset: str | None, config_file: Path | None, model_flags: dict,
                      train_flags: dict) -> tuple[ModelConfig, TrainConfig, str]:
    """The configs of a new run that starts from another model: that model's `model` table as it is
    (dropout and attention_dropout may change), the training recipe from preset < config file < flags
    (the preset's model sizes are not used)."""
    file, name, train_config = recipe(preset, config_file, train_flags)
    in_file = [k for k in file.get("model", {}) if k not in INIT_FROM_CHANGES]
    if in_file:
        raise RunError(f"{config_file}: [model] {in_file[0]} cannot be set with {named('init_from')}: the model's "
                       "shape is the one it starts from (only dropout and attention_dropout may change)", "init_from")
    shape = [f.name for f in dataclasses.fields(ModelConfig)
             if f.name in model_flags and f.name not in INIT_FROM_CHANGES]
    if shape:
        raise RunError(f"{named(shape[0])} cannot be set with {named('init_from')}: the model's shape is the one "
                       "it starts from (only dropout and attention_dropout may change)", shape[0], "init_from")
    try:
        model_config = replace(ModelConfig.from_dict(source_model), **{**file.get("model", {}), **model_flags})
    except (TypeError, ValueError) as e:
        raise RunError(f"impossible configuration: {e}") from None
    return model_config, train_config, name


def resume_configs(stored: dict, preset: str | None, config_file: Path | None, model_flags: dict,
                   train_flags: dict, src_vocab: int, tgt_vocab: int, joint: bool
                   ) -> tuple[ModelConfig, TrainConfig, str]:
    """The stored configs of a run, with only the flags a resume may change applied. A --preset or
    --config is accepted when it asks for what the run already is (the same command run again after
    a crash), and refused naming the first difference otherwise. A run that started from another
    model compares its own model table, not the preset's sizes."""
    try:
        model_config = ModelConfig.from_dict(stored["model"])
        train_config = TrainConfig.from_dict(stored["training"])
    except (KeyError, TypeError, ValueError) as e:
        raise RunError(f"the run's config.json has a bad configuration ({e})") from None
    name = stored.get("preset", "?")
    if preset or config_file:
        wanted_model, wanted_train, wanted_name = (
            init_from_configs(stored["model"], preset, config_file, model_flags, train_flags)
            if stored.get("init_from") else resolve(preset, config_file, model_flags, train_flags,
                                                    src_vocab, tgt_vocab, joint))
        if wanted_name != name:
            raise RunError(f"cannot resume: the run was made with preset {name}, not {wanted_name} "
                           "(start a new run directory instead)")
        model_flags = {k: v for k, v in wanted_model.to_dict().items() if k in MODEL_FIELDS}
        train_flags = wanted_train.to_dict()
    for key, value in model_flags.items():
        if getattr(model_config, key) != value:
            raise RunError(f"cannot resume: the run has {key}={getattr(model_config, key)!r}, "
                           f"this command asks for {value!r} (start a new run directory instead)")
    changes = {}
    for key, value in train_flags.items():
        if getattr(train_config, key) != value:
            if key not in RESUMABLE_CHANGES:
                raise RunError(f"cannot resume: the run has {key}={getattr(train_config, key)!r}, this command "
                               f"asks for {value!r}; a resume may only change {', '.join(sorted(RESUMABLE_CHANGES))}")
            changes[key] = value
    try:
        return model_config, dataclasses.replace(train_config, **changes), name
    except (TypeError, ValueError) as e:
        raise RunError(f"impossible configuration: {e}") from None


def retention_note(cfg: TrainConfig) -> str:
    """'' unless average_last needs more checkpoints than keep_last would keep: rotation keeps the
    last max(keep_last, average_last) (and the best one), so the user is told why more stay."""
    if cfg.average_last <= cfg.keep_last:
        return ""
    return (f"average_last {cfg.average_last} keeps the last {cfg.average_last} checkpoints (not keep_last "
            f"{cfg.keep_last}): the final model is their mean")


def fine_tuning_note(cfg: TrainConfig, d_model: int) -> str:
    """'' unless a run that starts from a trained model keeps the noam schedule, whose peak rate was
    made for training from scratch."""
    if cfg.schedule != "noam":
        return ""
    from transformer.training import noam_lr

    peak = noam_lr(cfg.warmup, d_model, cfg.warmup, cfg.lr_factor)
    return (f"starting from trained weights with the noam schedule (peak rate {peak:.2g} at step {cfg.warmup}); "
            "fine-tuning usually wants a small rate and a short warm-up, e.g. schedule inverse_sqrt, lr 1e-4, "
            "warmup 100")
