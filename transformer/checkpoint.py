"""Weights and training state on disk: safetensors + JSON only (nothing is unpickled), atomic writes."""

from __future__ import annotations

import json
import os
import random
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file, save_model
from torch.optim.swa_utils import AveragedModel

from transformer.config import ModelConfig
from transformer.files import atomic_directory, atomic_write
from transformer.json_text import loads
from transformer.model import Transformer

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
AVERAGE_FILE = "average.safetensors"  # a checkpoint's moving average of the weights (transformer/ema.py)


class CheckpointError(ValueError):
    """A weights file or run directory that cannot be used; the message names the file."""


def save_weights(model: Transformer, path: Path) -> None:
    """model.safetensors, written beside and renamed over (tied weights stored once)."""
    atomic_write(path, lambda tmp: save_model(model, str(tmp)))


def non_regular_kind(path: Path) -> str:
    """'' for a regular file (or a link to one), else what `path` is ('a FIFO', 'a directory', ...,
    'not found'): a FIFO or /dev/zero is never opened, reading one would block or never end."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "not found"
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return "" if stat.S_ISREG(mode) else next((name for test, name in kinds if test(mode)), "not a regular file")


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    kind = non_regular_kind(path)
    if kind == "not found":
        raise CheckpointError(f"{path}: file not found")
    if kind:
        raise CheckpointError(f"{path}: {kind}, not a regular file (a safetensors file is expected here)")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({str(e)[:100]})") from None


def load_weights(model: Transformer, path: Path) -> None:
    """Load weights into `model`, refusing a file made for another architecture."""
    tensors = read_tensors(path)
    own = model.state_dict()
    missing = [k for k in own if k not in tensors and not _tied_alias(model, k, tensors)]
    unexpected = [k for k in tensors if k not in own]
    if missing or unexpected:
        what = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise CheckpointError(f"{path}: weights do not belong to this model ({what})")
    for k, v in tensors.items():
        if own[k].shape != v.shape:
            raise CheckpointError(f"{path}: {k} has shape {tuple(v.shape)}, the config says {tuple(own[k].shape)}")
    model.load_state_dict(tensors, strict=False)


def _tied_alias(model: Transformer, name: str, tensors: dict) -> bool:
    """True when `name` shares storage with a parameter that is in `tensors`."""
    params = dict(model.named_parameters(remove_duplicate=False))
    if name not in params:
        return False
    return any(params[other] is params[name] for other in tensors if other in params)


def read_config(run_dir: Path) -> dict:
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{run_dir}: no {CONFIG_FILE} (is this a model directory from 'train'?)")
    try:
        config = loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict) or not all(
            isinstance(config.get(k, {}), dict) for k in ("training", "data")):
        raise CheckpointError(f"{path}: not a run configuration from 'train' (needs a model table)")
    return config


def load_model(run_dir: Path, device: str | torch.device = "cpu", weights: Path | None = None) -> Transformer:
    """A model directory (config.json + model.safetensors, or `weights`: a checkpoint's) -> the model, in eval mode."""
    config = read_config(run_dir)
    try:
        model_config = ModelConfig.from_dict(config["model"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{run_dir / CONFIG_FILE}: bad model configuration ({e})") from None
    with initial_weights_skipped():  # every parameter is read below (load_weights refuses a file lacking one)
        model = Transformer(model_config)
    load_weights(model, weights or run_dir / MODEL_FILE)
    return model.to(device).eval()


# torch.nn.init's functions that draw or fill a tensor in place (nn.Linear, nn.Embedding and our modules
# initialise their parameters through them)
_INIT_FUNCTIONS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
                   "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_",
                   "sparse_")


@contextmanager
def initial_weights_skipped() -> Iterator[None]:
    """Modules built inside keep their parameters as allocated (torch.empty: uninitialised), for a model
    whose every weight is then loaded: drawing ~7.5 million random initial values that the file
    replaces was ~0.09 s of `translate`'s start-up. torch.nn.init's functions do nothing meanwhile
    (transformers' `no_init_weights` does the same); building on the meta device instead would import
    torch's dynamo and sympy (1.5 s). Process-wide while it lasts: for loading, not for a thread that
    may be training beside it."""
    saved = {name: getattr(torch.nn.init, name) for name in _INIT_FUNCTIONS}
    for name in saved:
        setattr(torch.nn.init, name, _unchanged)
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(torch.nn.init, name, fn)


def _unchanged(tensor: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    return tensor


def average_weights(paths: list[Path]) -> dict[str, torch.Tensor]:
    """Element-wise mean of several weight files (checkpoint averaging)."""
    total: dict[str, torch.Tensor] = {}
    for p in paths:
        for k, v in read_tensors(p).items():
            total[k] = total.get(k, 0) + v.double()
    return {k: (v / len(paths)).float() for k, v in total.items()}


# ---- full training checkpoints -----------------------------------------------------------------

def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{key}"] = value.contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_state(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in list(tensors.items()) + list(meta["scalars"].items()):
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(directory: Path, model: Transformer, optimizer: torch.optim.Optimizer,
                    state: dict, run_id: str = "", scaler=None, average: AveragedModel | None = None) -> None:
    """checkpoints/step-N/: weights, optimizer, every RNG, the float16 loss scaler's state and the
    moving average of the weights if any, and `state` (JSON). Written to a hidden
    directory, fsynced and renamed, so a kill at any instant leaves the previous checkpoints intact; a
    failure (disk full) removes the partial directory. An existing directory of the same step is moved
    aside first and removed last, so one of the two always exists (recover_checkpoints)."""
    with atomic_directory(directory) as tmp:
        _write_checkpoint_files(tmp, model, optimizer, state, run_id, scaler, average)


def _write_checkpoint_files(tmp: Path, model: Transformer, optimizer: torch.optim.Optimizer, state: dict,
                            run_id: str, scaler, average: AveragedModel | None) -> None:
    save_model(model, str(tmp / MODEL_FILE))
    if average is not None:
        save_model(average.module, str(tmp / AVERAGE_FILE))
    opt_tensors, opt_meta = _optimizer_tensors(optimizer)
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    save_file(rng, str(tmp / "rng.safetensors"))
    py_state = random.getstate()
    meta = {"state": state, "optimizer": opt_meta, "run_id": run_id,
            "python_random": [py_state[0], list(py_state[1]), py_state[2]]}
    if scaler is not None:
        meta["grad_scaler"] = scaler.state_dict()  # scale, growth tracker: plain numbers
    if average is not None:
        meta["averaged_updates"] = int(average.n_averaged)
    (tmp / "state.json").write_text(json.dumps(meta, indent=1))


def recover_checkpoints(checkpoints: Path) -> list[str]:
    """After a killed or failed run: partial `.step-N.tmp-*` directories are removed; a `.step-N.old-*`
    left between the two renames of save_checkpoint is put back if step-N is missing, else removed.
    Returns what was done, one line each."""
    done: list[str] = []
    if not checkpoints.is_dir():
        return done
    for p in sorted(checkpoints.iterdir()):
        if not (p.name.startswith(".step-") and p.is_dir() and not p.is_symlink()):
            continue
        name, kind = p.name[1:].rsplit(".", 1)
        target = checkpoints / name
        if kind.startswith("old-") and not target.exists():
            os.replace(p, target)
            done.append(f"restored {target.name} from an interrupted save")
        else:
            shutil.rmtree(p, ignore_errors=True)
            done.append(f"removed the partial checkpoint {p.name}")
    return done


def load_checkpoint(directory: Path, model: Transformer, optimizer: torch.optim.Optimizer, scaler=None,
                    average: AveragedModel | None = None) -> dict:
    """Restore weights, optimizer, RNGs (and the loss scaler, the moving average) from
    save_checkpoint's directory; returns its `state`."""
    load_weights(model, directory / MODEL_FILE)
    if average is not None:
        if not (directory / AVERAGE_FILE).is_file():
            raise CheckpointError(f"{directory}: no {AVERAGE_FILE} (the checkpoint was saved without a moving "
                                  "average of the weights)")
        load_weights(average.module, directory / AVERAGE_FILE)
    try:
        meta = loads((directory / "state.json").read_text())
        optimizer.load_state_dict(_optimizer_state(read_tensors(directory / "optimizer.safetensors"),
                                                   meta["optimizer"]))
        rng = read_tensors(directory / "rng.safetensors")
        torch.set_rng_state(rng["torch"])
        saved_gpus = sum(k.startswith("cuda.") for k in rng)
        if torch.cuda.is_available() and saved_gpus == torch.cuda.device_count():  # else: another machine
            torch.cuda.set_rng_state_all([rng[f"cuda.{i}"] for i in range(saved_gpus)])
        version, internal, gauss = meta["python_random"]
        random.setstate((version, tuple(internal), gauss))
        if not isinstance(meta["state"], dict):
            raise ValueError("state is not a table")
        if scaler is not None and "grad_scaler" in meta:
            scaler.load_state_dict(meta["grad_scaler"])
        if average is not None:
            average.n_averaged.fill_(int(meta["averaged_updates"]))
    except (OSError, KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{directory}: incomplete or corrupt checkpoint ({str(e)[:100]})") from None
    return meta["state"]


def checkpoint_owner(directory: Path) -> str:
    """The run id recorded in a checkpoint ('' when none was, or it cannot be read)."""
    try:
        meta = loads((directory / "state.json").read_text())
    except (OSError, ValueError):
        return ""
    return meta.get("run_id", "") if isinstance(meta, dict) else ""


def checkpoint_epoch(directory: Path) -> int:
    """The epoch a checkpoint was saved in (0 when it cannot be read: the earliest there is)."""
    try:
        epoch = loads((directory / "state.json").read_text())["state"]["epoch"]
    except (OSError, ValueError, KeyError, TypeError):
        return 0
    return epoch if isinstance(epoch, int) else 0


def list_checkpoints(checkpoints: Path) -> list[Path]:
    """Complete checkpoints, oldest first (hidden temporary directories are ignored)."""
    if not checkpoints.is_dir():
        return []
    found = [p for p in checkpoints.iterdir() if p.is_dir() and p.name.startswith("step-")
             and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))
