"""Issue 27, one test each: SIGTERM stops a command as Ctrl-C does; a too deeply nested JSON file is one
line naming it; settings that surprise are said at the start; misleading one-liners say the cause."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests_shared import TINY_RUN, assert_one_line_error

REPO = Path(__file__).resolve().parents[2]
DEEP = "[" * 100_000 + "]" * 100_000  # json's scanner recurses once per level


def run_cli(*args, launcher=(sys.executable, "-m", "cli.main")):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([*launcher, *map(str, args)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_for(found, proc, timeout=180.0) -> None:
    t0 = time.time()
    while not found():
        assert proc.poll() is None, f"finished too early: {proc.communicate()}"
        assert time.time() - t0 < timeout
        time.sleep(0.01)


def train_args(data, out, *extra):
    return ["train", "--data", data, "--out", out, *TINY_RUN, *extra]


def hidden_leftovers(directory: Path) -> list[Path]:
    return [p for p in directory.rglob(".*") if ".tmp-" in p.name or ".old-" in p.name]


def same_weights(a_run: Path, b_run: Path, last_step: int) -> None:
    for name in (f"checkpoints/step-{last_step:07d}/model.safetensors", "model.safetensors"):
        a, b = load_file(a_run / name), load_file(b_run / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def eval_steps(run: Path) -> list[int]:
    events = map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
    return [e["step"] for e in events if e["event"] == "eval"]


# ---- SIGTERM = Ctrl-C --------------------------------------------------------------------------------

@pytest.mark.slow
def test_sigterm_during_train_saves_a_checkpoint_and_resumes_bitwise(demo_data, tmp_path):
    """docker stop / Kubernetes / Slurm / systemd send SIGTERM: the steps since the last checkpoint are
    saved (exit 143), nothing hidden is left, and the resumed run ends with the uninterrupted weights."""
    args = ["--max-steps", "24", "--eval-every", "4", "--log-every", "1", "--keep-last", "10", "--device", "cpu"]
    full = run_cli(*train_args(demo_data, tmp_path / "full", *args))
    assert full.wait(timeout=300) == 0, full.communicate()
    run = tmp_path / "stopped"
    proc = run_cli(*train_args(demo_data, run, *args))
    wait_for((run / "checkpoints" / "step-0000004").exists, proc)
    delay = random.uniform(0.0, 0.3)  # any point: a step, a validation, a checkpoint being written
    time.sleep(delay)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, (delay, err)
    assert "Traceback" not in err and f"terminated: checkpoint saved; continue with transformer-cli train " \
           f"--resume {run}" in err.replace("\n", " "), err
    stopped_at = max(int(p.name.split("-")[1]) for p in (run / "checkpoints").iterdir())
    assert 4 <= stopped_at < 24, (delay, stopped_at)
    assert hidden_leftovers(run) == []
    resumed = run_cli("train", "--resume", run)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    same_weights(tmp_path / "full", run, 24)
    assert eval_steps(run) == [4, 8, 12, 16, 20, 24]


@pytest.mark.slow
def test_sigterm_to_torchrun_stops_every_rank_at_one_checkpoint(demo_data, tmp_path):
    """torchrun passes SIGTERM on to its workers (each in a session of its own); the ranks agree on the
    stop at one update, rank 0 saves it, and a resume under torchrun ends with the uninterrupted weights."""
    torchrun = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m",
                "cli.main")
    args = ["--max-steps", "200", "--eval-every", "20", "--log-every", "5", "--keep-last", "10", "--device", "cpu"]
    full = run_cli(*train_args(demo_data, tmp_path / "full", *args), launcher=torchrun)
    assert full.wait(timeout=300) == 0, full.communicate()
    run = tmp_path / "stopped"
    proc = run_cli(*train_args(demo_data, run, *args), launcher=torchrun)
    wait_for((run / "checkpoints" / "step-0000020").exists, proc)  # 180 updates left: > the 0.3 s below
    time.sleep(random.uniform(0.0, 0.3))
    proc.send_signal(signal.SIGTERM)  # to torchrun alone, as a scheduler does
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "terminated: checkpoint saved" in err, err
    stopped_at = max(int(p.name.split("-")[1]) for p in (run / "checkpoints").iterdir())
    assert 20 <= stopped_at < 200, stopped_at
    assert hidden_leftovers(run) == []
    resumed = run_cli("train", "--resume", run, launcher=torchrun)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    same_weights(tmp_path / "full", run, 200)
    assert eval_steps(run) == list(range(20, 201, 20))


def test_sigterm_during_prepare_leaves_nothing_half_written(tmp_path):
    out = tmp_path / "prepared"
    proc = run_cli("prepare", "--dataset", "demo", "--out", out, "--vocab-size", "600")
    wait_for(lambda: any(p.name.startswith(".prepared.") for p in tmp_path.iterdir()), proc)  # its hidden directory
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == f"error: terminated: {out} was left as it was", err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == [], "no output and no hidden temporary directory"


@pytest.mark.parametrize("stop, code, word", [(signal.SIGTERM, 143, "terminated"), (None, 130, "interrupted")])
def test_a_stopped_export_leaves_nothing_and_says_so(model_dir, tmp_path, monkeypatch, capsys, stop, code, word):
    """Through the console entry point: SIGTERM (or Ctrl-C) in the middle of writing an export removes the
    hidden directory and is one line with the shell's exit code (Ctrl-C was a silent 130 before)."""
    import cli.main
    import transformer_cli.exporters.hf as hf

    def stopped_half_way(translator, work, name):
        (work / "half-written").write_text("x")
        if stop is None:
            raise KeyboardInterrupt
        os.kill(os.getpid(), stop)
        time.sleep(10)  # the handler raises here
        raise AssertionError("the signal did not stop the export")

    monkeypatch.setattr(hf, "export_hf", stopped_half_way)
    monkeypatch.setattr(sys, "argv", ["transformer-cli", "export", "-m", str(model_dir), "-f", "hf", "-o",
                                      str(tmp_path / "exported")])
    def not_handled(signum, frame):  # main() must replace this; a regression fails here, it does not end pytest
        raise AssertionError("SIGTERM reached the default handler: main() installed none")

    previous = signal.signal(signal.SIGTERM, not_handled)
    try:
        with pytest.raises(SystemExit) as exit_:
            cli.main.main()
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert exit_.value.code == code
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: {word}"
    assert list(tmp_path.iterdir()) == [], "no export and no hidden temporary directory"


# ---- JSON nested too deeply --------------------------------------------------------------------------

def test_a_too_deeply_nested_config_json_is_one_line_in_every_command(cli, model_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(model_dir, run)
    (run / "config.json").write_text(DEEP)
    for args in (["translate", "-m", run], ["explain", "-m", run, "I am a student."],
                 ["export", "-m", run, "-f", "hf", "-o", tmp_path / "out"], ["train", "--resume", run]):
        assert_one_line_error(cli(*args, input="x\n"), f"{run / 'config.json'}: not valid JSON (nested too deeply)")


def test_too_deeply_nested_data_and_state_files_are_one_line(cli, model_dir, demo_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(demo_data, data)
    (data / "prepare.json").write_text(DEEP)
    assert_one_line_error(cli("train", "--data", data, "--out", tmp_path / "r1"), "prepare.json", "nested too deeply")
    shutil.rmtree(data)
    shutil.copytree(demo_data, data)
    (data / "dataset" / "train" / "state.json").write_text(DEEP)
    assert_one_line_error(cli("train", "--data", data, "--out", tmp_path / "r2", *TINY_RUN),
                          f"{data / 'dataset'}", "nested too deeply")
    run = tmp_path / "run"
    shutil.copytree(model_dir, run)
    for state in (run / "checkpoints").glob("step-*/state.json"):
        state.write_text(DEEP)
    assert_one_line_error(cli("train", "--resume", run), "step-0000030", "corrupt checkpoint (nested too deeply)")
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"en": "a", "ko": "b"}\n' + DEEP + "\n")
    assert_one_line_error(cli("prepare", "-d", corpus, "--src", "en", "--tgt", "ko", "-o", tmp_path / "p"),
                          f"{corpus}: line 2 is not valid JSON (nested too deeply)")


def test_a_too_deeply_nested_metrics_line_is_dropped_like_a_truncated_one(tmp_path):
    from transformer_cli.metrics import read_metrics

    (tmp_path / "metrics.jsonl").write_text('{"event": "train", "step": 1}\n' + DEEP + "\n")
    events, broken = read_metrics(tmp_path)
    assert [e["step"] for e in events] == [1] and broken == 1


# ---- settings that surprise, said at the start --------------------------------------------------------

def test_fp16_on_the_cpu_and_average_last_beyond_keep_last_are_said_before_training(cli, demo_data, tmp_path):
    result = cli(*train_args(demo_data, tmp_path / "run", "--device", "cpu", "--precision", "fp16",
                             "--keep-last", "2", "--average-last", "5", "--max-steps", "1", "--eval-every", "1"))
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if line.startswith("note: ")]
    assert any("fp16 on the CPU" in n and "slower" in n and ("bf16" in n or "fp32" in n) for n in notes), notes
    assert any("average_last 5 keeps the last 5 checkpoints (not keep_last 2)" in n for n in notes), notes
    assert result.stderr.index("fp16 on the CPU") < result.stderr.index("training preset"), "said at the start"


def test_the_notes_are_silent_when_nothing_surprises():
    from transformer.trainer import TrainConfig
    from transformer_cli.runtime import precision_note
    from transformer_cli.train_config import retention_note

    cpu = torch.device("cpu")
    assert precision_note("fp32", cpu) == precision_note("bf16", cpu) == ""
    assert precision_note("fp16", torch.device("cuda")) == ""
    assert retention_note(TrainConfig(keep_last=5, average_last=5)) == retention_note(TrainConfig()) == ""


# ---- misleading one-liners ----------------------------------------------------------------------------

def test_cr_only_line_endings_are_lines_not_one_giant_line(tmp_path):
    from data.corpus import load_corpus

    en = [f"sentence {i}" for i in range(30)]
    ko = [f"문장 {i}" for i in range(30)]
    (tmp_path / "corpus.en").write_bytes("\r".join(en).encode() + b"\r")  # old Mac line endings
    (tmp_path / "corpus.ko").write_bytes("\r\n".join(ko).encode() + b"\r\n")  # Windows
    dd, _ = load_corpus(str(tmp_path / "corpus"), "en", "ko", tmp_path / "cache")
    assert dd["train"]["src"] == en and dd["train"]["tgt"] == ko


def saved_corpus(directory: Path, layout: str) -> list[tuple[str, str]]:
    import datasets

    pairs = [(f"I see {i} cats.", f"나는 고양이 {i}마리를 본다.") for i in range(400)]
    if layout == "translation":  # a DatasetDict as WMT/IWSLT have it
        rows = {"translation": [{"en": en, "ko": ko} for en, ko in pairs]}
        datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows)}).save_to_disk(str(directory))
    else:  # one Dataset with a column per language
        datasets.Dataset.from_dict({"en": [p[0] for p in pairs], "ko": [p[1] for p in pairs]}).save_to_disk(
            str(directory))
    return pairs


@pytest.mark.parametrize("layout", ["translation", "columns"])
def test_a_save_to_disk_directory_is_loaded_and_left_as_it_was(cli, tmp_path, layout):
    saved = tmp_path / "saved"
    pairs = saved_corpus(saved, layout)
    before = sorted((p.relative_to(saved), p.stat().st_mtime_ns) for p in saved.rglob("*"))
    result = cli("prepare", "-d", saved, "--src", "en", "--tgt", "ko", "-o", tmp_path / "prepared",
                 "--vocab-size", "100", "--valid-size", "40")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "prepared" / "prepare.json").read_text())
    assert sum(s["read"] for s in manifest["splits"].values()) == len(pairs)
    assert sorted((p.relative_to(saved), p.stat().st_mtime_ns) for p in saved.rglob("*")) == before


def test_export_says_a_missing_ctranslate2_and_a_bad_quantization_before_loading(cli, model_dir, tmp_path,
                                                                                monkeypatch):
    bad = cli("export", "-m", tmp_path / "no-such-run", "-f", "ctranslate2", "-o", tmp_path / "x",
              "--quantization", "int3")
    assert_one_line_error(bad, "--quantization must be one of int8, ", "got 'int3'")
    monkeypatch.setitem(sys.modules, "ctranslate2", None)  # as if it were not installed
    missing = cli("export", "-m", model_dir, "-f", "ctranslate2", "-o", tmp_path / "ct2")
    assert_one_line_error(missing, "needs the ctranslate2 package", "pip install")
    assert "refused" not in missing.stderr
    assert not list(tmp_path.iterdir())


def test_our_quantization_list_is_ctranslate2s():
    pytest.importorskip("ctranslate2")
    from ctranslate2.specs.model_spec import ACCEPTED_MODEL_TYPES

    from transformer_cli.exporters.ct2 import QUANTIZATIONS

    assert set(QUANTIZATIONS) == set(ACCEPTED_MODEL_TYPES)


def test_weights_that_are_a_fifo_or_a_device_say_so(cli, model_dir, tmp_path):
    from transformer.checkpoint import CheckpointError, read_tensors

    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)
    for path, kind in ((fifo, "a FIFO"), (Path("/dev/zero"), "a character device")):
        with pytest.raises(CheckpointError, match=f"{path}: {kind}, not a regular file"):
            read_tensors(path)  # never opened: a FIFO would block, /dev/zero never end
    run = tmp_path / "run"
    shutil.copytree(model_dir, run)
    weights = run / "checkpoints" / "step-0000030" / "model.safetensors"
    weights.unlink()
    os.mkfifo(weights)
    assert_one_line_error(cli("train", "--resume", run, "--max-steps", "31"), f"{weights}: a FIFO, not a regular file")
