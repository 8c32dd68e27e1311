"""Fine-tuning: `prepare --tokenizer RUN` encodes a new corpus with RUN's tokenizer, `train --init-from RUN`
starts a new run from RUN's weights and shape and resumes from its own checkpoints."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from cli.main import app
from data.batching import load_split
from data.tokenizer import Tokenizers, encode_batch
from tests_shared import TINY_RUN, assert_one_line_error

# fine-tuning settings as the README suggests them: a small rate after a short warm-up
FINE_TUNE = ["--preset", "tiny", "--eval-samples", "8", "--threads", "1", "--max-tokens", "400",
             "--schedule", "inverse_sqrt", "--lr", "1e-4", "--warmup", "100", "--log-every", "1", "--eval-every", "2"]


def events(run, kind: str) -> list[dict]:
    return [e for e in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if e["event"] == kind]


def same_weights(a, b) -> bool:
    a, b = load_file(a), load_file(b)
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def source(demo_data, tmp_path_factory):
    """A tiny run trained far enough to be much better than a fresh model (validation loss ~2.4 vs ~6.4)."""
    run = tmp_path_factory.mktemp("source") / "run"
    result = CliRunner().invoke(app, ["train", "--data", str(demo_data), "--out", str(run), *TINY_RUN,
                                      "--max-steps", "100", "--eval-every", "100", "--log-every", "1"])
    assert result.exit_code == 0, result.output
    return run


@pytest.fixture(scope="module")
def new_corpus(source, tmp_path_factory):
    """Another draw of the demo corpus (--seed 1), encoded with the source run's tokenizer."""
    out = tmp_path_factory.mktemp("new") / "prepared"
    result = CliRunner().invoke(app, ["prepare", "--dataset", "demo", "--seed", "1", "--tokenizer", str(source),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"the tokenizer of {source}" in result.stdout
    return out


def fine_tune(cli, data, out, init_from, *extra):
    return cli("train", "--data", data, "--out", out, "--init-from", init_from, *FINE_TUNE, *extra)


def test_prepare_with_a_runs_tokenizer_encodes_with_it(source, new_corpus):
    theirs = Tokenizers.load(source)
    manifest = json.loads((new_corpus / "prepare.json").read_text())
    assert manifest["tokenizer"]["from_run"] == {"path": str(source.resolve()), "fingerprint": theirs.fingerprint()}
    assert manifest["tokenizer"]["fingerprint"] == Tokenizers.load(new_corpus).fingerprint() == theirs.fingerprint()
    assert (new_corpus / "tokenizer.json").read_text() == (source / "tokenizer.json").read_text()
    valid = load_split(new_corpus, "validation")
    assert encode_batch(theirs.src, list(valid["src"])) == list(valid["src_ids"])
    assert encode_batch(theirs.tgt, list(valid["tgt"])) == list(valid["tgt_ids"])


def test_prepare_refuses_vocabulary_flags_with_a_tokenizer(cli, source, tmp_path):
    for flags in (["--vocab-size", "8000"], ["--min-frequency", "3"], ["--separate-vocab"]):
        result = cli("prepare", "--dataset", "demo", "--tokenizer", source, *flags, "--out", tmp_path / "o")
        assert_one_line_error(result, flags[0], "cannot be used with --tokenizer")
    assert_one_line_error(cli("prepare", "--dataset", "demo", "--tokenizer", tmp_path / "none", "--out", tmp_path / "o"),
                          "--tokenizer", "not a directory")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(cli("prepare", "--dataset", "demo", "--tokenizer", tmp_path / "empty", "--out", tmp_path / "o"),
                          "--tokenizer", "no tokenizer.json")
    assert not (tmp_path / "o").exists()


def test_init_from_starts_at_the_source_and_resumes_exactly(cli, source, new_corpus, tmp_path):
    full = tmp_path / "full"
    result = fine_tune(cli, new_corpus, full, source, "--max-steps", "4", "--dropout", "0.2")
    assert result.exit_code == 0, result.output
    assert f"starting from the weights of {source.resolve()}" in result.stderr
    config, theirs = json.loads((full / "config.json").read_text()), json.loads((source / "config.json").read_text())
    assert config["model"] == {**theirs["model"], "dropout": 0.2}
    assert config["init_from"]["path"] == str(source.resolve())
    assert config["init_from"]["run_id"] == theirs["run_id"]
    assert config["init_from"]["tokenizer_fingerprint"] == theirs["data"]["tokenizer_fingerprint"]
    # the first update's loss (computed before it) is the source's, not a fresh model's
    first, fresh = events(full, "train")[0]["loss"], events(source, "train")[0]["loss"]
    source_valid = events(source, "eval")[-1]["loss"]
    assert abs(first - source_valid) < 0.3 and first < 0.5 * fresh, (first, source_valid, fresh)
    # the same run interrupted after 2 steps, its source gone, then the same command again
    copy = tmp_path / "copy"
    shutil.copytree(source, copy)
    part = tmp_path / "part"
    assert fine_tune(cli, new_corpus, part, copy, "--max-steps", "2", "--dropout", "0.2").exit_code == 0
    shutil.rmtree(copy)  # resuming reads the run's own checkpoint, never the source again
    again = fine_tune(cli, new_corpus, part, copy, "--max-steps", "4", "--dropout", "0.2")
    assert again.exit_code == 0, again.output
    assert "resuming" in again.stderr and "starting from" not in again.stderr
    for name in ("checkpoints/step-0000004/model.safetensors", "model.safetensors"):
        assert same_weights(full / name, part / name), name
    assert [e["step"] for e in events(part, "train")] == [1, 2, 3, 4]


def test_the_first_weights_are_the_sources(source, new_corpus, tmp_path):
    """Stopped before its first update (Ctrl-C at once), the run saves step 0: the source's weights."""
    from transformer_cli.training import TrainRequest, train

    run = tmp_path / "run"
    request = TrainRequest(out=run, data=new_corpus, preset="tiny", training={"threads": 1}, init_from=source)
    result = train(request, should_stop=lambda: True)
    assert result.state.step == 0 and result.state.stop_reason == "interrupted"
    assert same_weights(run / "checkpoints" / "step-0000000" / "model.safetensors", source / "model.safetensors")


def test_a_restart_before_the_first_checkpoint_needs_the_same_source(source, new_corpus, tmp_path):
    """Killed before its first checkpoint, a run reads the source's weights again, if they are still the
    ones config.json records."""
    from transformer_cli.errors import RunError
    from transformer_cli.training import TrainRequest, train

    copy, run = tmp_path / "copy", tmp_path / "run"
    shutil.copytree(source, copy)
    request = TrainRequest(out=run, data=new_corpus, preset="tiny", training={"threads": 1}, init_from=copy)
    train(request, should_stop=lambda: True)
    first = run / "checkpoints" / "step-0000000" / "model.safetensors"
    shutil.rmtree(run / "checkpoints")  # as if killed before its first checkpoint
    train(TrainRequest(out=run, resume=True), should_stop=lambda: True)
    assert same_weights(first, source / "model.safetensors")
    shutil.rmtree(run / "checkpoints")
    save_file({k: v + 1 for k, v in load_file(copy / "model.safetensors").items()}, copy / "model.safetensors")
    with pytest.raises(RunError, match="has changed since this run started from it"):
        train(TrainRequest(out=run, resume=True), should_stop=lambda: True)


def test_the_library_refuses_vocabulary_options_with_a_tokenizer(source, tmp_path):
    from data.errors import DataError
    from data.prepare import PrepareOptions, prepare

    with pytest.raises(DataError, match="^vocab_size cannot be used with tokenizer"):
        prepare(PrepareOptions("demo", "en", "ko", vocab_size=300, tokenizer=str(source)), tmp_path / "o")


def test_init_from_refusals_are_one_line(cli, source, new_corpus, tmp_path):
    out = tmp_path / "run"
    assert_one_line_error(fine_tune(cli, new_corpus, out, source, "--d-model", "64"),
                          "--d-model cannot be set with --init-from")
    assert_one_line_error(fine_tune(cli, new_corpus, out, source, "--layers", "2"), "--encoder-layers", "--init-from")
    conf = tmp_path / "c.toml"
    conf.write_text("[model]\nd_ff = 128\n")
    assert_one_line_error(fine_tune(cli, new_corpus, out, source, "--config", conf), "[model] d_ff", "--init-from")
    other = tmp_path / "other"  # a corpus with a tokenizer of its own
    (tmp_path / "c.tsv").write_text("".join(f"w{i} x{i % 7}\tv{i % 5} y{i}\n" for i in range(60)))
    result = cli("prepare", "--dataset", tmp_path / "c.tsv", "--src", "a", "--tgt", "b", "--vocab-size", "60",
                 "--min-frequency", "1", "--out", other)
    assert result.exit_code == 0, result.output
    assert_one_line_error(fine_tune(cli, other, out, source), "--data", "another tokenizer", "--tokenizer")
    broken = tmp_path / "broken"
    broken.mkdir()
    assert_one_line_error(fine_tune(cli, new_corpus, out, broken), "--init-from", "config.json")
    shutil.copy(source / "config.json", broken)
    assert_one_line_error(fine_tune(cli, new_corpus, out, broken), "--init-from", "model.safetensors", "not found")
    (broken / "model.safetensors").write_bytes(b"not weights")
    assert_one_line_error(fine_tune(cli, new_corpus, out, broken), "model.safetensors", "not a readable safetensors")
    (broken / "config.json").write_text("{")
    assert_one_line_error(fine_tune(cli, new_corpus, out, broken), "config.json", "not valid JSON")
    assert not out.exists() or not any(out.iterdir()), "nothing was written"
    plain = tmp_path / "plain"  # a run that did not start from another model: resuming it with one is refused
    shutil.copytree(source, plain)
    assert_one_line_error(cli("train", "--resume", plain, "--init-from", source), "did not start from another model")


def test_an_imported_model_with_two_tokenizer_files_and_shared_embeddings(cli, source, tmp_path):
    """An import may have one vocabulary in two files (tokenizer.src.json + tokenizer.tgt.json) and
    share_embeddings: the model table is used as it is, only the vocabulary sizes must agree."""
    imported = tmp_path / "imported"
    imported.mkdir()
    model = json.loads((source / "config.json").read_text())["model"]
    assert model["share_embeddings"]
    (imported / "config.json").write_text(json.dumps({"model": model}))  # no run id, no data table
    shutil.copy(source / "model.safetensors", imported)
    for side in ("src", "tgt"):
        shutil.copy(source / "tokenizer.json", imported / f"tokenizer.{side}.json")
    data = tmp_path / "data"
    result = cli("prepare", "--dataset", "demo", "--seed", "2", "--tokenizer", imported, "--out", data)
    assert result.exit_code == 0, result.output
    assert not Tokenizers.load(data).joint and (data / "tokenizer.src.json").is_file()
    run = tmp_path / "run"
    result = fine_tune(cli, data, run, imported, "--max-steps", "1")
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == model and config["init_from"]["run_id"] is None
    assert {"tokenizer.src.json", "tokenizer.tgt.json"} <= {p.name for p in run.iterdir()}


@pytest.mark.slow
def test_two_processes_start_from_the_source(source, new_corpus, tmp_path):
    """Under torchrun every rank builds the model and loads the source's weights before DDP wraps it."""
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "cli.main",
           "train", "--data", str(new_corpus), "--out", str(run), "--init-from", str(source), *FINE_TUNE,
           "--max-steps", "2"]
    done = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert done.returncode == 0, done.stderr
    [replicas] = events(run, "replicas")
    assert replicas["identical"] and json.loads((run / "config.json").read_text())["world_size"] == 2
    assert abs(events(run, "train")[0]["loss"] - events(source, "eval")[-1]["loss"]) < 0.3


def test_fine_tuning_an_imported_opus_mt_model(cli, imported_run, tmp_path):
    """The chain a practitioner runs: an imported Marian model, a corpus prepared with its tokenizer,
    train --init-from it. The loss is finite (its <s> is not an output class, label smoothing skips
    it) and starts at the imported model's, far below a fresh model's."""
    from marian_fixture import multi30k_lines

    pairs = zip(multi30k_lines("val", "de", 400), multi30k_lines("val", "en", 400))
    (tmp_path / "pairs.tsv").write_text("".join(f"{d}\t{e}\n" for d, e in pairs), encoding="utf-8")
    data = tmp_path / "prepared"
    result = cli("prepare", "--dataset", tmp_path / "pairs.tsv", "--src", "de", "--tgt", "en", "--tokenizer",
                 imported_run, "--valid-size", "40", "--out", data)
    assert result.exit_code == 0, result.output
    tuned = tmp_path / "tuned"
    refused = fine_tune(cli, data, tuned, imported_run, "--max-steps", "3", "--bpe-dropout", "0.1")
    assert refused.exit_code != 0 and "--bpe-dropout needs a BPE tokenizer; this run's is Unigram" in refused.output
    assert not (tuned / "config.json").exists(), "refused before anything was written"
    result = fine_tune(cli, data, tuned, imported_run, "--max-steps", "3")
    assert result.exit_code == 0, result.output
    losses = [e["loss"] for e in events(tuned, "train")]
    assert all(math.isfinite(x) for x in losses) and all(math.isfinite(e["loss"]) for e in events(tuned, "eval"))
    fresh = cli("train", "--data", data, "--out", tmp_path / "fresh", *TINY_RUN, "--max-steps", "1", "--log-every", "1",
                "--d-model", "32", "--heads", "4", "--d-ff", "64", "--layers", "2")
    assert fresh.exit_code == 0, fresh.output
    assert losses[0] < events(tmp_path / "fresh", "train")[0]["loss"] - 1.0
    assert json.loads((tuned / "config.json").read_text())["model"]["activation"] == "swish"
