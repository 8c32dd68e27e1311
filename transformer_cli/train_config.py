"""Resolve the effective model and training configuration: preset < --config file < flags."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

from transformer.config import ModelConfig
from transformer.presets import PRESETS
from transformer.trainer import TrainConfig

from transformer_cli.errors import RunError

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
    file = read_config_file(config_file) if config_file else {}
    name = preset or file.get("preset") or "small"
    if name not in PRESETS:
        raise RunError(f"unknown preset '{name}': choose one of {', '.join(PRESETS)}")
    model = {**PRESETS[name]["model"], **file.get("model", {}), **model_flags}
    training = {**PRESETS[name]["training"], **file.get("training", {}), **train_flags}
    try:
        model_config = ModelConfig(src_vocab_size=src_vocab, tgt_vocab_size=tgt_vocab, pad_id=0,
                                   share_embeddings=joint, **model)
        train_config = TrainConfig(**training)
    except (TypeError, ValueError) as e:
        raise RunError(f"impossible configuration: {e}") from None
    return model_config, train_config, name


def resume_configs(stored: dict, preset: str | None, config_file: Path | None, model_flags: dict,
                   train_flags: dict, src_vocab: int, tgt_vocab: int, joint: bool
                   ) -> tuple[ModelConfig, TrainConfig, str]:
    """The stored configs of a run, with only the flags a resume may change applied. A --preset or
    --config is accepted when it asks for what the run already is (the same command run again after
    a crash), and refused naming the first difference otherwise."""
    try:
        model_config = ModelConfig.from_dict(stored["model"])
        train_config = TrainConfig.from_dict(stored["training"])
    except (KeyError, TypeError, ValueError) as e:
        raise RunError(f"the run's config.json has a bad configuration ({e})") from None
    name = stored.get("preset", "?")
    if preset or config_file:
        wanted_model, wanted_train, wanted_name = resolve(preset, config_file, model_flags, train_flags,
                                                          src_vocab, tgt_vocab, joint)
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
