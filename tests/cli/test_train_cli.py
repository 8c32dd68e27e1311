import json
import os
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
SMALL = TINY_RUN


def train_args(data, out, *extra):
    return ["train", "--data", data, "--out", out, *SMALL, *extra]


def test_train_writes_a_self_contained_run(cli, demo_data, tmp_path):
    run = tmp_path / "run"
    result = cli(*train_args(demo_data, run, "--max-steps", "6", "--eval-every", "3", "--log-every", "2"))
    assert result.exit_code == 0, result.output
    assert {"config.json", "tokenizer.json", "model.safetensors", "metrics.jsonl", "checkpoints"} <= {
        p.name for p in run.iterdir()}
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["d_model"] == 32 and config["training"]["max_steps"] == 6
    events = metrics(run)
    assert [e["step"] for e in events if e["event"] == "eval"] == [3, 6]
    assert {"bleu", "chrf", "loss", "ppl"} <= set(events[-1])
    # not a terminal: plain log lines, then the summary
    assert "step 2/6" in result.stdout and "eval step 6" in result.stdout and "training finished" in result.stdout
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-0000003", "step-0000006"]


def test_fp16_trains_with_a_loss_scaler_in_its_checkpoints(cli, demo_data, tmp_path):
    run = tmp_path / "run"
    result = cli(*train_args(demo_data, run, "--precision", "fp16", "--max-steps", "20", "--eval-every", "10",
                             "--log-every", "5"))
    assert result.exit_code == 0, result.output
    losses = [e["loss"] for e in metrics(run, "train")]
    assert losses[-1] < losses[0]
    meta = json.loads((run / "checkpoints" / "step-0000020" / "state.json").read_text())
    assert meta["grad_scaler"]["scale"] > 0 and "_growth_tracker" in meta["grad_scaler"]


@pytest.mark.slow
def test_compile_trains_and_saves_the_plain_model(cli, demo_data, tmp_path):
    run = tmp_path / "run"
    result = cli(*train_args(demo_data, run, "--compile", "--max-steps", "4", "--eval-every", "4"))
    assert result.exit_code == 0, result.output
    assert json.loads((run / "config.json").read_text())["training"]["compile"] is True
    assert not [k for k in load_file(run / "model.safetensors") if "_orig_mod" in k]


def run_cli(*args, **kwargs):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "cli.main", *map(str, args)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def wait_for(path: Path, proc, timeout=120.0):
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, f"finished before {path.name} appeared: {proc.communicate()}"
        assert time.time() - t0 < timeout
        time.sleep(0.02)


@pytest.mark.slow
def test_killed_and_resumed_run_is_bitwise_identical(demo_data, tmp_path):
    args = ["--max-steps", "24", "--eval-every", "4", "--log-every", "4", "--keep-last", "10", "--ema-decay", "0.9"]
    full = run_cli(*train_args(demo_data, tmp_path / "full", *args))
    assert full.wait() == 0, full.communicate()
    killed = run_cli(*train_args(demo_data, tmp_path / "killed", *args))
    wait_for(tmp_path / "killed" / "checkpoints" / "step-0000008", killed)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    resumed = run_cli("train", "--resume", tmp_path / "killed")
    out, err = resumed.communicate()
    assert resumed.returncode == 0, err
    assert "resuming" in err
    for name in ("checkpoints/step-0000024/model.safetensors", "checkpoints/step-0000024/average.safetensors",
                 "model.safetensors"):
        a, b = load_file(tmp_path / "full" / name), load_file(tmp_path / "killed" / name)
        assert a.keys() == b.keys()
        assert all((a[k] == b[k]).all() for k in a), name
    steps = [e["step"] for e in metrics(tmp_path / "killed", "eval")]
    assert steps == [4, 8, 12, 16, 20, 24]


def test_bpe_dropout_run_resumed_from_a_checkpoint_is_bitwise_identical(cli, demo_data, tmp_path):
    """tokenizers draws BPE-dropout from an unseeded source, so a run records each epoch's
    segmentation (RUN/subwords/) and a resumed run must read it back: a run cut back to its step-8
    checkpoint and resumed ends with the weights of the run that went through."""
    import shutil

    args = ["--max-steps", "16", "--eval-every", "4", "--keep-last", "10", "--bpe-dropout", "0.2"]
    full = tmp_path / "full"
    assert cli(*train_args(demo_data, full, *args)).exit_code == 0
    assert (full / "subwords" / "epoch-000000" / "src.ids").is_file()
    cut = tmp_path / "cut"
    shutil.copytree(full, cut)
    for step in (12, 16):
        shutil.rmtree(cut / "checkpoints" / f"step-{step:07d}")
    result = cli("train", "--resume", cut)
    assert result.exit_code == 0, result.output
    a, b = load_file(full / "checkpoints/step-0000016/model.safetensors"), load_file(
        cut / "checkpoints/step-0000016/model.safetensors")
    assert all((a[k] == b[k]).all() for k in a)
    shutil.rmtree(cut / "checkpoints" / "step-0000016")
    shutil.rmtree(cut / "subwords")  # drawn again: another segmentation, other weights
    assert cli("train", "--resume", cut).exit_code == 0
    c = load_file(cut / "checkpoints/step-0000016/model.safetensors")
    assert not all((a[k] == c[k]).all() for k in a)


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(demo_data, tmp_path):
    proc = run_cli(*train_args(demo_data, tmp_path / "run", "--max-steps", "100000", "--eval-every", "5"))
    wait_for(tmp_path / "run" / "checkpoints" / "step-0000005", proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "--resume" in err
    steps = [int(p.name.split("-")[1]) for p in (tmp_path / "run" / "checkpoints").iterdir()]
    assert max(steps) > 5, "a checkpoint was saved at the step where it stopped"


def test_train_errors(cli, demo_data, tmp_path):
    assert_one_line_error(cli("train", "--data", tmp_path / "nope", "--out", tmp_path / "r"), "not found")
    (tmp_path / "half").mkdir()
    assert_one_line_error(cli("train", "--data", tmp_path / "half", "--out", tmp_path / "r"), "incomplete")
    assert_one_line_error(cli("train", "--data", demo_data, "--out", tmp_path / "r", "--preset", "huge"),
                          "unknown preset 'huge'", "tiny")
    assert_one_line_error(cli(*train_args(demo_data, tmp_path / "r", "--heads", "5")), "divisible")
    bad = tmp_path / "bad.toml"
    bad.write_text("[training]\nlearning_speed = 3\n")
    assert_one_line_error(cli("train", "--data", demo_data, "--out", tmp_path / "r", "--config", bad),
                          "unknown [training] keys: learning_speed")
    assert_one_line_error(cli(*train_args(demo_data, tmp_path / "r", "--max-tokens", "4")), "--max-tokens 4")
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


def test_config_file_and_resume_mismatch(cli, demo_data, tmp_path):
    conf = tmp_path / "c.toml"
    conf.write_text('preset = "tiny"\n[model]\nd_model = 32\nn_heads = 2\nd_ff = 64\nn_encoder_layers = 1\n'
                    'n_decoder_layers = 1\n[training]\nmax_steps = 2\neval_every = 2\neval_samples = 4\n')
    run = tmp_path / "run"
    result = cli("train", "--data", demo_data, "--out", run, "--config", conf, "--threads", "1")
    assert result.exit_code == 0, result.output
    assert json.loads((run / "config.json").read_text())["model"]["d_model"] == 32
    before = (run / "checkpoints" / "step-0000002" / "model.safetensors").read_bytes()
    assert_one_line_error(cli("train", "--resume", run, "--d-model", "64"), "cannot resume", "d_model")
    assert_one_line_error(cli("train", "--resume", run, "--label-smoothing", "0.2"), "cannot resume")
    other = tmp_path / "other"
    from data.prepare import PrepareOptions, prepare

    prepare(PrepareOptions("demo", "en", "ko", vocab_size=300), other)
    assert_one_line_error(cli("train", "--resume", run, "--data", other), "tokenizer")
    assert (run / "checkpoints" / "step-0000002" / "model.safetensors").read_bytes() == before
    extended = cli("train", "--resume", run, "--max-steps", "4")
    assert extended.exit_code == 0, extended.output
    assert (run / "checkpoints" / "step-0000004").is_dir()


def test_out_of_memory_names_a_smaller_batch(cli, demo_data, tmp_path, monkeypatch):
    import transformer.trainer as trainer

    def oom(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(trainer, "train_step", oom)
    result = cli(*train_args(demo_data, tmp_path / "r", "--max-steps", "4"))
    assert_one_line_error(result, "out of memory with --max-tokens 400", "--max-tokens 200")


def test_curves_png_written(cli, demo_data, tmp_path):
    pytest.importorskip("matplotlib")
    run = tmp_path / "run"
    result = cli(*train_args(demo_data, run, "--max-steps", "4", "--eval-every", "2", "--log-every", "1"))
    assert result.exit_code == 0, result.output
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_accumulate_beyond_an_epoch_is_an_error(cli, demo_data, tmp_path):
    result = cli(*train_args(demo_data, tmp_path / "r", "--accumulate", "100000", "--max-tokens", "20000"))
    assert_one_line_error(result, "fewer batches than --accumulate 100000")


def test_bf16_training_runs(cli, demo_data, tmp_path):
    result = cli(*train_args(demo_data, tmp_path / "r", "--max-steps", "2", "--eval-every", "2",
                             "--precision", "bf16"))
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "r" / "config.json").read_text())["training"]["precision"] == "bf16"


def test_r_drop_and_weight_decay_train_from_the_command_line(cli, demo_data, tmp_path):
    result = cli(*train_args(demo_data, tmp_path / "r", "--max-steps", "20", "--eval-every", "20", "--log-every", "5",
                             "--r-drop", "5", "--weight-decay", "0.01"))
    assert result.exit_code == 0, result.output
    training = json.loads((tmp_path / "r" / "config.json").read_text())["training"]
    assert training["r_drop"] == 5.0 and training["weight_decay"] == 0.01
    losses = [e["loss"] for e in metrics(tmp_path / "r", "train")]
    assert losses[-1] < losses[0]
    refused = cli(*train_args(demo_data, tmp_path / "s", "--r-drop", "-1"))
    assert refused.exit_code != 0 and "r_drop must be >= 0" in refused.output


def test_r_drop_from_leaves_the_first_updates_plain(cli, demo_data, tmp_path, monkeypatch):
    """--r-drop-from N: updates 1..N are plain steps, R-Drop from update N + 1 (the step count N
    reached), and a resume goes on with the same rule."""
    from transformer import trainer

    seen = []
    monkeypatch.setattr(trainer, "train_step", _recording(seen, trainer.train_step, lambda args: args[8]))
    run = tmp_path / "r"
    flags = ("--eval-every", "3", "--log-every", "1", "--r-drop", "5", "--r-drop-from", "4")
    first = cli(*train_args(demo_data, run, "--max-steps", "3", *flags))
    assert first.exit_code == 0 and "R-Drop 5 after 4 updates" in " ".join(first.output.split())
    assert cli("train", "--resume", str(run), "--max-steps", "6").exit_code == 0
    assert seen == [0.0, 0.0, 0.0, 0.0, 5.0, 5.0]
    assert json.loads((run / "config.json").read_text())["training"]["r_drop_from"] == 4
    refused = cli(*train_args(demo_data, tmp_path / "s", "--r-drop-from", "-1"))
    assert refused.exit_code != 0 and "r_drop_from must be >= 0" in refused.output


def test_cooldown_cools_the_end_of_the_budget_and_a_longer_resume_warms_it_again(cli, demo_data, tmp_path):
    """--cooldown 0.5 with --max-steps 6: updates 5 and 6 (4 and 5 of 6 done) take 2/3 and 1/3 of the
    schedule's rate; resumed with --max-steps 12 the budget is half spent, so update 7 has the full rate
    again and the rest cools over updates 7-12."""
    from transformer.training import noam_lr

    run = tmp_path / "c"
    flags = ("--eval-every", "3", "--log-every", "1", "--warmup", "2", "--cooldown", "0.5")
    first = cli(*train_args(demo_data, run, "--max-steps", "6", *flags))
    assert first.exit_code == 0 and "over the last 50% of the budget" in " ".join(first.output.split())
    assert "weight decay" not in first.output, "the tiny preset trains with Adam"
    assert cli("train", "--resume", str(run), "--max-steps", "12").exit_code == 0
    config = json.loads((run / "config.json").read_text())
    d_model = config["model"]["d_model"]
    assert config["training"]["cooldown"] == 0.5
    rates = {e["step"]: e["lr"] for e in metrics(run, "train")}
    factor = config["training"]["lr_factor"]
    factors = [rates[k] / noam_lr(k, d_model, 2, factor) for k in range(1, 13)]
    # update k is taken with k - 1 of the budget's updates done: factor min(1, (1 - (k - 1) / steps) / 0.5)
    assert factors == pytest.approx([1, 1, 1, 1, 2 / 3, 1 / 3] + [1, 5 / 6, 2 / 3, 1 / 2, 1 / 3, 1 / 6])
    refused = cli(*train_args(demo_data, tmp_path / "s", "--cooldown", "1.5"))
    assert refused.exit_code != 0 and "cooldown must be in [0, 1]" in refused.output


def metrics(run, kind=None):
    """The run's metrics.jsonl events, only those of one kind ("train", "eval") when given."""
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [e for e in events if kind is None or e["event"] == kind]


def evals(run):
    return metrics(run, "eval")


def test_stopping_rules(cli, demo_data, tmp_path):
    # max epochs: the tiny batches of max-tokens 3000 make an epoch a few dozen steps
    run = tmp_path / "epochs"
    result = cli(*train_args(demo_data, run, "--max-tokens", "3000", "--max-epochs", "1", "--eval-every", "1000"))
    assert result.exit_code == 0, result.output
    assert "max epochs (1)" in result.stdout
    assert metrics(run)[-1]["epoch"] == 1
    # max time
    result = cli(*train_args(demo_data, tmp_path / "time", "--max-time", "0.5", "--eval-every", "1000"))
    assert result.exit_code == 0 and "max time (0.5 s)" in result.stdout
    # patience: a constant zero-ish learning rate cannot improve the metric
    run = tmp_path / "patience"
    result = cli(*train_args(demo_data, run, "--schedule", "constant", "--lr", "1e-12", "--metric", "loss",
                             "--eval-every", "1", "--patience", "2", "--max-steps", "50"))
    assert result.exit_code == 0, result.output
    assert "no improvement in 2 validations" in result.stdout
    assert len(evals(run)) <= 10


def test_average_last_checkpoints(cli, demo_data, tmp_path):
    from transformer.checkpoint import average_weights

    run = tmp_path / "avg"
    result = cli(*train_args(demo_data, run, "--max-steps", "6", "--eval-every", "2", "--average-last", "3"))
    assert result.exit_code == 0, result.output
    assert "mean of the last 3 checkpoints" in result.stdout
    expected = average_weights([run / "checkpoints" / f"step-{s:07d}" / "model.safetensors" for s in (2, 4, 6)])
    final = load_file(run / "model.safetensors")
    assert final and set(final) <= set(expected)
    for k, v in final.items():
        assert torch.allclose(v, expected[k], atol=1e-6), k


def test_ema_validates_and_publishes_the_moving_average(cli, demo_data, tmp_path):
    args = ["--max-steps", "8", "--eval-every", "4", "--metric", "loss"]
    plain, ema = tmp_path / "plain", tmp_path / "ema"
    assert cli(*train_args(demo_data, plain, *args)).exit_code == 0
    result = cli(*train_args(demo_data, ema, *args, "--ema-decay", "0.9"))
    assert result.exit_code == 0, result.output
    assert "moving average at the best checkpoint" in result.stdout
    for step in (4, 8):  # the average changes nothing of the training itself
        a, b = (load_file(run / "checkpoints" / f"step-{step:07d}" / "model.safetensors") for run in (plain, ema))
        assert all(torch.equal(a[k], b[k]) for k in a)
    losses = [[e["loss"] for e in evals(run)] for run in (plain, ema)]
    assert losses[0] != losses[1]  # validation scored other weights: the average's
    best = evals(ema)[-1]["best_step"]
    kept = ema / "checkpoints" / f"step-{best:07d}"
    final, average, raw = (load_file(p) for p in (ema / "model.safetensors", kept / "average.safetensors",
                                                   kept / "model.safetensors"))
    assert all(torch.equal(final[k], average[k]) for k in final)
    assert any(not torch.equal(average[k], raw[k]) for k in raw)


def test_ema_with_average_last_means_the_checkpoints_averages(cli, demo_data, tmp_path):
    from transformer.checkpoint import average_weights

    run = tmp_path / "ema"
    result = cli(*train_args(demo_data, run, "--max-steps", "6", "--eval-every", "2", "--average-last", "2",
                             "--ema-decay", "0.9"))
    assert result.exit_code == 0, result.output
    cells = " ".join(result.stdout.replace("│", " ").split())  # the summary table wraps its cells
    assert "mean of the moving averages of the last 2 checkpoints" in cells
    expected = average_weights([run / "checkpoints" / f"step-{s:07d}" / "average.safetensors" for s in (4, 6)])
    final = load_file(run / "model.safetensors")
    assert all(torch.allclose(v, expected[k], atol=1e-6) for k, v in final.items())


def test_resuming_an_ema_run_without_its_average_is_one_error(cli, demo_data, tmp_path):
    run = tmp_path / "ema"
    first = cli(*train_args(demo_data, run, "--max-steps", "4", "--eval-every", "4", "--ema-decay", "0.9"))
    assert first.exit_code == 0, first.output
    (run / "checkpoints" / "step-0000004" / "average.safetensors").unlink()
    assert_one_line_error(cli("train", "--resume", run, "--max-steps", "8"), "cannot resume", "average.safetensors")
    assert_one_line_error(cli(*train_args(demo_data, tmp_path / "bad", "--ema-decay", "1")), "ema_decay")


def test_yaml_config(cli, demo_data, tmp_path):
    pytest.importorskip("yaml")
    conf = tmp_path / "c.yaml"
    conf.write_text("preset: tiny\nmodel:\n  d_model: 32\n  n_heads: 2\n  d_ff: 64\ntraining:\n  max_steps: 2\n"
                    "  eval_every: 2\n  eval_samples: 4\n")
    result = cli("train", "--data", demo_data, "--out", tmp_path / "run", "--config", conf, "--threads", "1")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model"]["d_ff"] == 64


def test_live_display_renders_on_a_terminal():
    import io

    from rich.console import Console

    from cli.train_display import LiveDisplay

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=100, color_system=None)
    with LiveDisplay(console, max_steps=10, start_step=0) as display:
        display.update({"event": "train", "step": 5, "epoch": 0, "loss": 2.5, "nll": 2.0, "lr": 1e-3,
                        "tokens_per_s": 1234.0, "grad_norm": 1.0, "elapsed": 1.0})
        display.update({"event": "eval", "step": 10, "epoch": 0, "loss": 2.0, "nll": 1.5, "ppl": 4.5,
                        "bleu": 12.3, "chrf": 40.0, "best_step": 10, "is_best": True,
                        "samples": [("I am a student.", "나는 학생이다.", "나는 학생이다.")]})
        display.update({"event": "choosing", "sentences": 500, "beam_size": 5, "length_penalties": [0.6, 1.0]})
    text = buf.getvalue()
    assert "10/10" in text and "12.30" in text and "1,234" in text and "나는 학생이다." in text
    assert "choosing the length penalty (0.6, 1) on 500 validation sentences, beam 5" in text


def test_metric_loss_and_keep_last_pruning(cli, demo_data, tmp_path):
    run = tmp_path / "run"
    result = cli(*train_args(demo_data, run, "--max-steps", "8", "--eval-every", "2", "--keep-last", "1",
                             "--metric", "loss"))
    assert result.exit_code == 0, result.output
    evals = metrics(run, "eval")
    best = min(evals, key=lambda e: e["loss"])
    assert [e["step"] for e in evals if e["is_best"]][-1] == best["step"], "best by validation loss"
    kept = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert kept == sorted({f"step-{best['step']:07d}", "step-0000008"}), "the best and the last one"


def test_separate_vocabularies_end_to_end(cli, tmp_path):
    data, run = tmp_path / "data", tmp_path / "run"
    assert cli("prepare", "--dataset", "demo", "--out", data, "--vocab-size", "300", "--separate-vocab").exit_code == 0
    assert {"tokenizer.src.json", "tokenizer.tgt.json"} <= {p.name for p in data.iterdir()}
    result = cli(*train_args(data, run, "--max-steps", "4", "--eval-every", "4"))
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())["model"]
    assert config["share_embeddings"] is False
    out = cli("translate", "--model", run, "-b", "2", input="I am a student.\n\nWe read a book.\n")
    assert out.exit_code == 0, out.stderr
    assert len(out.stdout.splitlines()) == 3 and out.stdout.splitlines()[1] == ""


@pytest.mark.parametrize("text, seconds", [("40m", 2400), ("1h30m", 5400), ("90s", 90), ("2400", 2400),
                                           ("1.5h", 5400), ("2h", 7200), ("0", 0), ("1h0m30s", 3630)])
def test_max_time_accepts_durations(text, seconds):
    from cli.train import parse_duration

    assert parse_duration(text) == seconds


def test_max_time_flag(cli, demo_data, tmp_path):
    run = tmp_path / "run"
    result = cli(*train_args(demo_data, run, "--max-time", "1h30m", "--max-steps", "2", "--eval-every", "2"))
    assert result.exit_code == 0, result.output
    assert json.loads((run / "config.json").read_text())["training"]["max_time"] == 5400.0
    for bad in ("forty minutes", "m", "-5m", "1m1h"):
        assert_one_line_error(cli(*train_args(demo_data, tmp_path / "r2", "--max-time", bad)), "--max-time")


def test_dashboard_eta_sparklines_and_attention_map():
    import io

    from rich.console import Console

    from cli.train_display import LiveDisplay, config_summary, sparkline
    from transformer.config import ModelConfig
    from transformer.trainer import TrainConfig

    assert sparkline([1, 2, 3]) == "▁▅█" and sparkline([5, 5]) == "▁▁" and sparkline([]) == ""
    summary = config_summary(ModelConfig(src_vocab_size=100, tgt_vocab_size=100), TrainConfig(max_time=600))
    assert len(summary.splitlines()) == 2 and "d_model 512" in summary and "0:10:00" in summary
    assert "weight decay" not in summary and "budget" not in summary, "Adam and no cooldown say nothing"
    tuned = config_summary(ModelConfig(src_vocab_size=100, tgt_vocab_size=100),
                           TrainConfig(weight_decay=0.1, cooldown=0.2))
    assert "weight decay 0.1 (AdamW)" in tuned and "over the last 20% of the budget" in tuned
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=100, color_system=None)
    with LiveDisplay(console, max_steps=1000, start_step=0, max_time=2400) as display:
        for s in range(1, 11):  # 50 steps a minute from step 50 on: 500 steps left = 10 minutes
            display.update({"event": "train", "step": 50 * s, "epoch": 0, "loss": 6 - 0.4 * s, "nll": 2.0,
                            "lr": 1e-3 * s, "tokens_per_s": 5000.0, "elapsed": 60.0 * s})
        assert display.eta_text == "ETA 0:10:00 (max steps)"
        display.update({"event": "eval", "step": 500, "epoch": 0, "loss": 2.0, "nll": 1.5, "ppl": 4.5, "bleu": 12.3,
                        "chrf": 40.0, "best_step": 500, "is_best": True, "samples": [],
                        "attention": {"src": ["▁Ein", "▁Hund", "</s>"], "out": ["▁A", "▁dog", "</s>"],
                                      "weights": [[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.0, 0.3, 0.7]]}})
    text = buf.getvalue()
    assert "█▇▆▆▅▄▃▃▂▁" in text and "▁▂▃▃▄▅▆▆▇█" in text  # loss falls, learning rate rises
    assert "cross-attention at step 500" in text and "0.80" in text and "▁Hund" in text
    with LiveDisplay(console, max_steps=10**6, start_step=0, max_time=120) as display:
        display.update({"event": "train", "step": 1, "epoch": 0, "loss": 1.0, "nll": 1.0, "lr": 1.0,
                        "tokens_per_s": 1.0, "elapsed": 30.0})
        display.update({"event": "train", "step": 2, "epoch": 0, "loss": 1.0, "nll": 1.0, "lr": 1.0,
                        "tokens_per_s": 1.0, "elapsed": 60.0})
        assert display.eta_text == "ETA 0:01:00 (max time)"
    with LiveDisplay(console, max_steps=10**6, start_step=0, max_epochs=2, batches_per_epoch=100) as display:
        for s, (epoch, batch) in enumerate([(0, 10), (0, 60)], start=1):  # 50 batches a minute, 140 left
            display.update({"event": "train", "step": s, "epoch": epoch, "loss": 1.0, "nll": 1.0, "lr": 1.0,
                            "tokens_per_s": 1.0, "elapsed": 60.0 * s, "batch_in_epoch": batch})
        assert display.eta_text == "ETA 0:02:48 (max epochs)"


def test_validation_events_carry_a_cross_attention_map(demo_data, tmp_path):
    from transformer_cli import TrainRequest, train

    events = []
    train(TrainRequest(tmp_path / "run", demo_data, preset="tiny",
                       training={"max_steps": 4, "eval_every": 2, "eval_samples": 4, "threads": 1}),
          on_event=events.append)
    maps = [e["attention"] for e in events if e["event"] == "eval"]
    assert len(maps) == 2
    for a in maps:
        assert a["src"][-1] == "</s>" and a["out"][-1] == "</s>"
        assert len(a["weights"]) == len(a["out"]) and all(len(r) == len(a["src"]) for r in a["weights"])
        assert all(abs(sum(r) - 1) < 1e-4 for r in a["weights"])
    assert "attention" not in (tmp_path / "run" / "metrics.jsonl").read_text()


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bf16_only_where_the_hardware_has_it(cli, demo_data, tmp_path, monkeypatch, native):
    """--precision auto is stored as asked (a resume decides again on its own machine) and trains in
    bf16 where bf16 is native, float32 elsewhere (emulated bf16 would be slower than float32)."""
    from transformer import trainer
    from transformer_cli import runtime

    monkeypatch.setattr(runtime, "native_bf16", lambda device: native)
    seen = []
    monkeypatch.setattr(trainer, "train_step", _recording(seen, trainer.train_step))
    result = cli(*train_args(demo_data, tmp_path / "r", "--max-steps", "2", "--eval-every", "2",
                             "--precision", "auto"))
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "r" / "config.json").read_text())["training"]["precision"] == "auto"
    assert set(seen) == {"bf16" if native else "fp32"}
    assert ("bf16" if native else "fp32") in " ".join(result.output.split())


def _recording(seen, train_step, pick=lambda args: args[6]):
    """train_step that first records pick(its positional arguments): the precision by default, as
    the trainer passes every argument by position (args[8]: R-Drop's alpha)."""
    def step(*args, **options):
        seen.append(pick(args))
        return train_step(*args, **options)
    return step


def test_cpu_bf16_probe_follows_torch():
    from transformer_cli.runtime import native_bf16, resolve_precision

    cpu = torch.device("cpu")
    expected = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert native_bf16(cpu) == expected
    assert resolve_precision("auto", cpu) == ("bf16" if expected else "fp32")
    assert resolve_precision("fp16", cpu) == "fp16" and resolve_precision("fp32", cpu) == "fp32"


def test_tensorboard_logs_every_event_of_metrics_jsonl(cli, demo_data, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    result = cli(*train_args(demo_data, run, "--max-steps", "4", "--eval-every", "2", "--log-every", "1",
                             "--tensorboard"))
    assert result.exit_code == 0, result.output
    assert "needs the tensorboard package" not in result.output, "no warning when the package is there"
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    board = EventAccumulator(str(run / "tensorboard"))
    board.Reload()
    events = metrics(run)
    for kind, key in (("train", "loss"), ("eval", "bleu"), ("eval", "loss")):
        logged, scalars = [e for e in events if e["event"] == kind], board.Scalars(f"{kind}/{key}")
        assert logged and [s.step for s in scalars] == [e["step"] for e in logged]
        assert [s.value for s in scalars] == pytest.approx([e[key] for e in logged], rel=1e-6)  # float32


def test_tensorboard_without_the_package_warns_and_trains(cli, demo_data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import raises ImportError
    run = tmp_path / "run"
    result = cli(*train_args(demo_data, run, "--max-steps", "2", "--eval-every", "2", "--tensorboard"))
    assert result.exit_code == 0, result.output
    assert "--tensorboard needs the tensorboard package" in result.stderr
    assert (run / "model.safetensors").is_file() and not (run / "tensorboard").exists()


def test_small_preset_turns_r_drop_on_after_its_plain_phase():
    """The Multi30k recipe (issue 26): plain updates first, R-Drop once the model starts to over-fit,
    well after the warm-up; --r-drop 0 turns it off."""
    from transformer_cli.train_config import resolve

    _, cfg, _ = resolve("small", None, {}, {}, 8000, 8000, True)
    assert cfg.r_drop == 5.0 and cfg.r_drop_from > cfg.warmup
    assert cfg.weight_decay == 0.1, "the small preset trains with AdamW's decay (issue 26, runs 29-30)"
    _, off, _ = resolve("small", None, {}, {"r_drop": 0.0}, 8000, 8000, True)
    assert off.r_drop == 0.0
