"""What a hostile user found (the reliability issue), one test per finding: data loss, wrong results
with exit code 0, and "internal error" where the user made the mistake."""

import errno
import json
import os
import shutil

import pytest

from tests_shared import TINY_RUN, assert_one_line_error

TINY = TINY_RUN


def train(cli, data, out, *extra):
    return cli("train", "--data", data, "--out", out, *TINY, *extra)


# ---- data loss and corruption ---------------------------------------------------------------------

def test_translate_refuses_its_input_as_output(cli, model_dir, tmp_path):
    text = tmp_path / "same.txt"
    text.write_text("I am a student.\nWe read a book.\n")
    link = tmp_path / "link.txt"
    link.symlink_to(text)
    assert_one_line_error(cli("translate", "-m", model_dir, "-i", text, "-o", text), "is the input file")
    assert_one_line_error(cli("translate", "-m", model_dir, "-i", text, "-o", link), "is the input file")
    assert text.read_text() == "I am a student.\nWe read a book.\n"


def test_translate_output_is_atomic(cli, model_dir, tmp_path, monkeypatch):
    import transformer_cli.stream as stream

    source = tmp_path / "in.txt"
    source.write_text("".join(f"line {i}\n" for i in range(6)))
    out = tmp_path / "out.txt"
    out.write_text("an older translation\n")
    calls = []
    real = stream.output_line

    def interrupted_after_two(*args):
        calls.append(1)
        if len(calls) > 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(stream, "output_line", interrupted_after_two)
    result = cli("translate", "-m", model_dir, "-b", "1", "-i", source, "-o", out, "--buffer-lines", "1")
    assert_one_line_error(result, "interrupted", "out.txt.partial")
    assert out.read_text() == "an older translation\n", "the destination is never half-written"
    assert len((tmp_path / "out.txt.partial").read_text().splitlines()) == 2, "what was done is kept"
    monkeypatch.setattr(stream, "output_line", real)
    assert cli("translate", "-m", model_dir, "-b", "1", "-i", source, "-o", out).exit_code == 0
    assert len(out.read_text().splitlines()) == 6
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary file left"


def test_a_run_directory_in_use_is_locked(cli, demo_data, tmp_path):
    from transformer_cli.run_lock import RunLock

    run = tmp_path / "run"
    with RunLock(run):
        result = train(cli, demo_data, run, "--max-steps", "2")
    assert_one_line_error(result, str(run), f"pid {os.getpid()}")
    assert not run.exists(), "the lock holder made the directory and left nothing in it"
    # a lock file left by a killed process (no flock held) never blocks
    run.mkdir()
    (run / ".lock").write_text("999999\n")
    assert train(cli, demo_data, run, "--max-steps", "2", "--eval-every", "2").exit_code == 0


def test_prepare_overwrite_never_deletes_what_prepare_did_not_write(cli, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "train.de").write_text("ein Haus\nder Hund\n" * 20)
    (corpus / "train.en").write_text("a house\nthe dog\n" * 20)
    args = ["prepare", "--dataset", corpus, "--src", "de", "--tgt", "en", "--vocab-size", "60"]
    assert_one_line_error(cli(*args, "--out", corpus, "--overwrite"), "is the input")
    assert_one_line_error(cli(*args, "--out", corpus / "prepared", "--overwrite"), "is inside the input")
    assert_one_line_error(cli(*args, "--out", tmp_path, "--overwrite"), "contains the input")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    assert_one_line_error(cli(*args, "--out", mine, "--overwrite"), "not made by", "refusing")
    assert (mine / "notes.txt").read_text() == "precious"
    assert sorted(p.name for p in corpus.iterdir()) == ["train.de", "train.en"]
    out = tmp_path / "out"
    assert cli(*args, "--out", out).exit_code == 0
    (out / "extra.txt").write_text("added later")
    assert_one_line_error(cli(*args, "--out", out, "--overwrite"), "extra.txt")
    (out / "extra.txt").unlink()
    assert cli(*args, "--out", out, "--overwrite").exit_code == 0


def test_an_impossible_model_writes_nothing(cli, demo_data, tmp_path):
    run = tmp_path / "run"
    result = train(cli, demo_data, run, "--d-model", "32768", "--d-ff", "1000000", "--heads", "8")
    assert_one_line_error(result, "too large", "GiB")
    assert not run.exists(), "nothing is written before the model and optimizer exist"
    assert train(cli, demo_data, run, "--max-steps", "2", "--eval-every", "2").exit_code == 0


def test_disk_full_during_a_checkpoint(cli, demo_data, tmp_path, monkeypatch):
    import transformer.checkpoint as ck

    run = tmp_path / "run"
    real, calls = ck.save_file, []

    def full_disk(tensors, path, *args, **kwargs):
        calls.append(path)
        if len(calls) > 2:  # the second checkpoint's optimizer file
            with open(path, "wb") as f:
                f.write(b"\0" * 1000)
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return real(tensors, path, *args, **kwargs)

    monkeypatch.setattr(ck, "save_file", full_disk)
    result = train(cli, demo_data, run, "--max-steps", "4", "--eval-every", "2")
    assert_one_line_error(result, "no space left on", "keeps its last complete checkpoint")
    assert "internal error" not in result.stderr
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-0000002"], "no partial checkpoint"
    monkeypatch.setattr(ck, "save_file", real)
    # leftovers of a killed run are cleaned up by the next one
    (run / "checkpoints" / ".step-0000003.tmp-424242").mkdir()
    (run / ".config.json.tmp-424242").write_text("{")
    resumed = cli("train", "--resume", run)
    assert resumed.exit_code == 0, resumed.output
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-0000002", "step-0000004"]
    assert not [p for p in run.iterdir() if p.name.startswith(".") and p.name != ".lock"]


def test_a_truncated_metrics_line_does_not_block_resume(cli, demo_data, tmp_path):
    run = tmp_path / "run"
    assert train(cli, demo_data, run, "--max-steps", "2", "--eval-every", "2", "--log-every", "1").exit_code == 0
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"event": "train", "st')
    result = cli("train", "--resume", run, "--max-steps", "4")
    assert result.exit_code == 0, result.output
    assert "dropped 1 unreadable line" in result.stderr
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == 4


def test_rotation_never_deletes_another_runs_checkpoints(cli, demo_data, tmp_path):
    args = ["--max-steps", "4", "--eval-every", "2", "--keep-last", "1"]
    other, run = tmp_path / "other", tmp_path / "run"
    assert train(cli, demo_data, other, *args).exit_code == 0
    assert train(cli, demo_data, run, *args).exit_code == 0
    # run/checkpoints becomes a link to a directory that also holds the other run's checkpoints
    elsewhere = tmp_path / "elsewhere"
    shutil.move(str(run / "checkpoints"), elsewhere)
    (run / "checkpoints").symlink_to(elsewhere)
    for step, name in ((2, "step-0000001"), (4, "step-0000005")):
        shutil.copytree(other / "checkpoints" / f"step-{step:07d}", elsewhere / name)
    result = cli("train", "--resume", run, "--max-steps", "8")
    assert result.exit_code == 0, result.output
    assert "from step 4" in result.stderr, "resumed from its own checkpoint, not the other run's step 5"
    left = sorted(p.name for p in elsewhere.iterdir())
    assert {"step-0000001", "step-0000005", "step-0000008"} <= set(left), left


# ---- wrong results with exit code 0 ---------------------------------------------------------------

def test_special_token_strings_are_text(cli, model_dir):
    result = cli("inspect-attention", "-m", model_dir, "I am <pad> a </s> student <s> <unk>",
                 "--target", "나는 <s> 학생 </s> 이다", "--format", "json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert "<pad>" not in doc["source_tokens"] and doc["source_tokens"].count("</s>") == 1
    assert doc["target_input_tokens"].count("<s>") == 1 and "</s>" not in doc["target_input_tokens"]
    masked = [m for m in doc["maps"] if m["kind"] == "encoder"][0]["weights"]
    assert all(w is not None for row in masked for w in row), "no source position is masked out"


@pytest.mark.parametrize("flags, words", [
    (["--max-len-a", "-5"], "--max-len-a"),
    (["--max-len-a", "nan"], "--max-len-a"),
    (["--max-len-b", "-100"], "--max-len-b"),
    (["--max-len-a", "0", "--max-len-b", "0"], "no output token"),
    (["--length-penalty", "nan"], "--length-penalty"),
    (["--length-penalty", "inf"], "--length-penalty"),
    (["--beam-size", "1000000"], "--beam-size"),
    (["--beam-size", "0"], "--beam-size"),
    (["--threads", "-1"], "--threads"),
    (["--batch-tokens", "0"], "--batch-tokens"),
])
def test_numeric_flags_are_range_checked(cli, model_dir, flags, words):
    assert_one_line_error(cli("translate", "-m", model_dir, *flags, input="I am a student.\n"), words)


@pytest.mark.parametrize("change, words", [
    ({"n_heads": True}, "n_heads must be an int"),
    ({"d_model": 32.0}, "d_model must be an int"),
    ({"max_len": 1}, "max_len must be >= 16"),
    ({"dropout": "0.1"}, "dropout must be a float"),
])
def test_config_types_are_validated(cli, model_dir, tmp_path, change, words):
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    config = json.loads((broken / "config.json").read_text())
    config["model"].update(change)
    (broken / "config.json").write_text(json.dumps(config))
    assert_one_line_error(cli("translate", "-m", broken, input="x\n"), words)


def test_resuming_a_finished_run_trains_no_further_step(cli, demo_data, tmp_path):
    run = tmp_path / "run"
    assert train(cli, demo_data, run, "--max-steps", "2", "--eval-every", "2").exit_code == 0
    before = (run / "checkpoints" / "step-0000002" / "model.safetensors").read_bytes()
    metrics = (run / "metrics.jsonl").read_text()
    result = cli("train", "--resume", run)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-0000002"]
    assert (run / "checkpoints" / "step-0000002" / "model.safetensors").read_bytes() == before
    assert (run / "metrics.jsonl").read_text() == metrics, "no step was trained"


def test_the_same_command_again_resumes(cli, demo_data, tmp_path):
    run = tmp_path / "run"
    assert train(cli, demo_data, run, "--max-steps", "2", "--eval-every", "2").exit_code == 0
    again = train(cli, demo_data, run, "--max-steps", "4", "--eval-every", "2")
    assert again.exit_code == 0, again.output
    assert "resuming" in again.stderr and (run / "checkpoints" / "step-0000004").is_dir()
    other = cli("train", "--data", demo_data, "--out", run, *TINY[2:], "--preset", "small", "--max-steps", "6")
    assert_one_line_error(other, "made with preset tiny, not small")
    changed = train(cli, demo_data, run, "--max-steps", "6", "--label-smoothing", "0.3")
    assert_one_line_error(changed, "label_smoothing")


# ---- "internal error" where the user made the mistake ----------------------------------------------

def test_user_mistakes_are_one_line_never_internal(cli, model_dir, demo_data, tmp_path):
    missing, a_dir = tmp_path / "no" / "such" / "out.txt", tmp_path
    (tmp_path / "file").write_text("x")
    cases = [
        (("translate", "-m", model_dir, "-o", missing), "does not exist"),
        (("translate", "-m", model_dir, "-o", a_dir), "is a directory"),
        (("inspect-attention", "-m", model_dir, "hi", "--format", "json", "-o", missing), "does not exist"),
        (("inspect-attention", "-m", model_dir, "hi", "--format", "png", "-o", a_dir), "is a directory"),
        (("prepare", "--dataset", "demo", "--out", tmp_path / "file" / "sub"), "is not a directory"),
        (("inspect-attention", "-m", model_dir, "hi", "--beam-size", "0"), "--beam-size"),
        (("train", "--data", demo_data, "--out", tmp_path / "file" / "run"), "is not a directory"),
    ]
    import torch

    if not torch.cuda.is_available():
        cases.append((("inspect-attention", "-m", model_dir, "hi", "--device", "cuda"), "no CUDA device"))
    for args, words in cases:
        result = cli(*args, input="I am a student.\n")
        assert_one_line_error(result, words)
        assert "internal error" not in result.stderr


def test_wrong_shaped_json_is_one_line(cli, model_dir, demo_data, tmp_path):
    for shape in ("[]", '{"model": 5}', '"text"'):
        broken = tmp_path / f"run{len(shape)}"
        shutil.copytree(model_dir, broken)
        (broken / "config.json").write_text(shape)
        assert_one_line_error(cli("translate", "-m", broken, input="x\n"), "config.json")
        assert_one_line_error(cli("inspect-attention", "-m", broken, "x"), "config.json")
    data = tmp_path / "data"
    shutil.copytree(demo_data, data)
    (data / "prepare.json").write_text('["not", "a", "manifest"]')
    assert_one_line_error(cli("train", "--data", data, "--out", tmp_path / "r"), "prepare.json")


def test_inspect_attention_on_auto_device_and_invalid_utf8(cli, model_dir):
    result = cli("inspect-attention", "-m", model_dir, "--device", "auto", "--kind", "encoder",
                 input=b"I am \xff\xfe a student.\n")
    assert result.exit_code == 0, result.output
    assert "not valid UTF-8" in result.stderr and "\ufffd" in result.stdout


def test_png_without_cjk_font_warns_once(cli, model_dir, tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib

    before = dict(matplotlib.rcParams)
    before.pop("backend")
    out = tmp_path / "maps.png"
    result = cli("inspect-attention", "-m", model_dir, "I am a student.", "--format", "png", "-o", out,
                 "--layer", "all", "--head", "all")
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 1000
    assert "findfont" not in result.stderr and len(result.stderr.splitlines()) <= 2, result.stderr
    after = dict(matplotlib.rcParams)
    after.pop("backend")
    assert after == before, "no global matplotlib settings changed"
