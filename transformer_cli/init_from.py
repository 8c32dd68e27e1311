"""`train --init-from`: a new run that starts from another model's weights and shape (a run of
`train`, or an imported model) and trains it further on data encoded with that model's tokenizer.

The new run's config.json records where it started (`init_from`: path, run id, tokenizer fingerprint,
SHA-256 of the weights). Once it has a checkpoint of its own it resumes from that, like any run; only a
run killed before its first checkpoint reads the source's weights again, and only if they are still
the ones it recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from data.errors import DataError
from data.tokenizer import JOINT_FILE, SIDE_FILES, Tokenizers
from transformer.checkpoint import CONFIG_FILE, MODEL_FILE, CheckpointError, load_weights, non_regular_kind, read_config
from transformer.config import ModelConfig
from transformer.files import sha256_file

from transformer_cli.errors import RunError, named


@dataclass(frozen=True)
class InitSource:
    """The model a new run starts from, read and checked before anything is built."""

    model: dict  # the `model` table of its config.json, the new run's model as it is
    record: dict  # what the new run's config.json records of it (init_from)


def read_source(run_dir: Path) -> InitSource:
    """The model directory `run_dir` (config.json, model.safetensors, tokenizer files) as a starting
    point; RunError naming the file that is missing or unreadable."""
    try:
        stored = read_config(run_dir)
        ModelConfig.from_dict(stored["model"])
    except CheckpointError as e:
        raise RunError(f"{named('init_from')} {e}", "init_from") from None
    except (TypeError, ValueError) as e:
        raise RunError(f"{named('init_from')} {run_dir / CONFIG_FILE}: bad model configuration ({e})",
                       "init_from") from None
    weights = run_dir / MODEL_FILE
    kind = non_regular_kind(weights)
    if kind:
        raise RunError(f"{named('init_from')} {weights}: {'file not found' if kind == 'not found' else kind}",
                       "init_from")
    record = {"path": str(run_dir.resolve()), "run_id": stored.get("run_id"),
              "tokenizer_fingerprint": tokenizer_fingerprint(run_dir, stored), "weights_sha256": sha256_file(weights)}
    return InitSource(stored["model"], record)


def tokenizer_fingerprint(run_dir: Path, stored: dict) -> str:
    """The fingerprint of the tokenizer files in run_dir, else the one its config.json records."""
    if (run_dir / JOINT_FILE).is_file() or all((run_dir / f).is_file() for f in SIDE_FILES.values()):
        try:
            return Tokenizers.load(run_dir).fingerprint()
        except DataError as e:
            raise RunError(f"{named('init_from')} {e}", "init_from") from None
    recorded = (stored.get("data") or {}).get("tokenizer_fingerprint")
    if isinstance(recorded, str) and recorded:
        return recorded
    raise RunError(f"{named('init_from')} {run_dir}: no {JOINT_FILE} (or {SIDE_FILES['src']} + "
                   f"{SIDE_FILES['tgt']}) and no tokenizer fingerprint in its {CONFIG_FILE}", "init_from")


def check_data(source: InitSource, toks: Tokenizers, data_dir: Path) -> None:
    """The prepared data must be encoded with the source's tokenizer, in vocabularies of the model's sizes."""
    start = source.record["path"]
    if toks.fingerprint() != source.record["tokenizer_fingerprint"]:
        raise RunError(f"{named('data')} {data_dir} was encoded with another tokenizer than {start}: prepare the "
                       f"corpus with 'transformer-cli prepare --tokenizer {start}'", "data", "init_from")
    sizes = (toks.src.get_vocab_size(), toks.tgt.get_vocab_size())
    wanted = (source.model.get("src_vocab_size"), source.model.get("tgt_vocab_size"))
    if sizes != wanted:
        raise RunError(f"{named('data')} {data_dir} has vocabularies of {sizes[0]} / {sizes[1]} tokens, the model "
                       f"in {start} has {wanted[0]} / {wanted[1]}", "data", "init_from")


def resumed_record(stored: dict, init_from: Path | None, run_dir: Path) -> dict | None:
    """What a resumed run's config.json (`stored`) records of the model it started from (None: it did not).
    A resume may repeat that init_from (the same command again), never name another one."""
    record = stored.get("init_from")
    if record is not None and not (isinstance(record, dict) and all(
            isinstance(record.get(k), str) for k in ("path", "weights_sha256"))):
        raise RunError(f"{run_dir / CONFIG_FILE}: init_from is not a table with path and weights_sha256")
    if init_from is None:
        return record
    if record is None:
        raise RunError(f"cannot resume: {run_dir} did not start from another model; drop {named('init_from')}",
                       "init_from")
    if Path(record["path"]) != init_from.resolve():
        raise RunError(f"cannot resume: {run_dir} started from {record['path']}, not {init_from} "
                       "(start a new run directory instead)", "init_from")
    return record


def load_initial_weights(model, record: dict) -> None:
    """The source's weights into `model`, if they are still the ones `record` names."""
    weights = Path(record["path"]) / MODEL_FILE
    try:
        if sha256_file(weights) != record["weights_sha256"]:
            raise RunError(f"{weights} has changed since this run started from it (it has no checkpoint of "
                           "its own yet): start a new run directory instead")
        load_weights(model, weights)
    except CheckpointError as e:
        raise RunError(f"{named('init_from')} {e}", "init_from") from None
    except OSError as e:
        raise RunError(f"{named('init_from')} {weights}: {(e.strerror or str(e)).lower()}", "init_from") from None
