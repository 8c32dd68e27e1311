import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests_shared import assert_one_line_error

REPO = Path(__file__).resolve().parents[2]


LINES = ["I am a student.", "", "   ", "They buy tea often.", "word " * 80, "We went home.",
         "My father watches a play at the library."]


def test_one_output_line_per_input_line_in_order(cli, model_dir):
    raw = ("\n".join(LINES) + "\n").encode() + b"bad \xff\xfe bytes\n" + b"last line without newline"
    result = cli("translate", "--model", model_dir, "--beam-size", "2", input=raw)
    assert result.exit_code == 0, result.stderr
    out = result.stdout.split("\n")
    assert out[-1] == "" and len(out) - 1 == len(LINES) + 2
    assert out[1] == "" and out[2] == "", "empty and whitespace-only lines give empty lines"
    assert "1 line(s) longer than 39 tokens were truncated" in result.stderr
    assert "1 line(s) were not valid UTF-8" in result.stderr
    # the same sentences alone, or in other batches, translate the same
    for i in (0, 3, 6):
        alone = cli("translate", "--model", model_dir, "--beam-size", "2", input=LINES[i] + "\n")
        assert alone.stdout == out[i] + "\n"
    tiny_batches = cli("translate", "--model", model_dir, "--beam-size", "2", "--batch-tokens", "8",
                       "--buffer-lines", "3", input=raw)
    assert tiny_batches.stdout == result.stdout


def test_scores_jsonl_and_nbest(cli, model_dir):
    scored = cli("translate", "--model", model_dir, "--scores", "-b", "3", input="We went home.\n")
    score, text = scored.stdout.rstrip("\n").split("\t")
    assert float(score) <= 0.0
    result = cli("translate", "--model", model_dir, "--format", "jsonl", "-b", "4", "--n-best", "3",
                 input="We went home.\n\n")
    first, empty = [json.loads(line) for line in result.stdout.splitlines()]
    assert first["translation"] == text and first["score"] == pytest.approx(float(score), abs=1e-4)
    assert len(first["nbest"]) == 3
    assert [n["score"] for n in first["nbest"]] == sorted((n["score"] for n in first["nbest"]), reverse=True)
    assert len(first["tokens"]) == len(first["token_logprobs"])
    assert all(p <= 0 for p in first["token_logprobs"])
    pairs = [tuple(map(int, p.split("-"))) for p in first["alignment"].split()]
    assert all(0 <= s < 3 for s, _ in pairs), "source word indices of 'We went home.'"
    assert empty["translation"] == "" and empty["nbest"] == []


def test_length_style_flag(cli, model_dir):
    """--length-style average scores log P / |Y|^alpha, gnmt (the default) log P / ((5 + |Y|) / 6)^alpha,
    |Y| counting </s>; an unknown style is one line naming the flag."""
    assert "--length-style" in cli("translate", "--help").stdout
    sentences = "We went home.\nI am a student.\n"
    for style, lp in (("average", lambda n: n ** 0.8), ("gnmt", lambda n: ((5 + n) / 6) ** 0.8)):
        result = cli("translate", "--model", model_dir, "--format", "jsonl", "-b", "3", "--length-penalty", "0.8",
                     *(("--length-style", style) if style != "gnmt" else ()), input=sentences)
        assert result.exit_code == 0, result.stderr
        for line in result.stdout.splitlines():
            row = json.loads(line)
            expected = sum(row["token_logprobs"]) / lp(len(row["tokens"]))
            assert row["score"] == pytest.approx(expected, abs=1e-4), style
    assert_one_line_error(cli("translate", "--model", model_dir, "--length-style", "mean", input="x\n"),
                          "--length-style must be gnmt or average, got 'mean'")


@pytest.mark.parametrize("beam_size", [1, 4])
def test_banning_pad_and_bos_changes_no_output_of_a_trained_model(model_dir, beam_size):
    """Translator.search bans <pad> and <s>; the trained model never chooses them, so the search
    without the ban (on the same one-sentence batches) finds the same hypotheses, scores equal."""
    from data.tokenizer import BOS_ID, EOS_ID
    from transformer.beam import beam_search
    from transformer.decoding import greedy_search
    from transformer_cli import SearchOptions, load_run

    translator = load_run(model_dir)
    rows = translator.encode(LINES[:1] + LINES[3:]).ids
    options = SearchOptions(beam_size=beam_size, n_best=beam_size)
    for row in rows:
        nbest, src = translator.search([row], options)[0], translator.tensor([row])
        free = ([greedy_search(translator.model, src, BOS_ID, EOS_ID, 1.5, 10, 1.0)] if beam_size == 1 else
                beam_search(translator.model, src, BOS_ID, EOS_ID, beam_size, beam_size, 1.0))[0]
        assert [h.tokens for h in nbest] == [h.tokens for h in free]
        assert [h.score for h in nbest] == [h.score for h in free]


def test_files_output_and_reference(cli, model_dir, tmp_path):
    (tmp_path / "a.txt").write_text("I am a student.\nWe went home.\n")
    (tmp_path / "b.txt").write_text("They buy tea often.\n")
    (tmp_path / "ref.txt").write_text("나는 학생이다.\n우리는 집으로 갔다.\n그들은 자주 차를 산다.\n")
    out = tmp_path / "out.txt"
    result = cli("translate", "--model", model_dir, "-i", tmp_path / "a.txt", "-i", tmp_path / "b.txt",
                 "-o", out, "--reference", tmp_path / "ref.txt")
    assert result.exit_code == 0, result.stderr
    assert len(out.read_text().splitlines()) == 3 and result.stdout == ""
    assert "BLEU" in result.stderr and "chrF" in result.stderr


def test_errors(cli, model_dir, tmp_path):
    assert_one_line_error(cli("translate", "--model", tmp_path / "none", input="x\n"), "not found")
    assert_one_line_error(cli("translate", "--model", model_dir, "-b", "2", "--n-best", "3",
                              "--format", "jsonl", input="x\n"), "--n-best 3")
    assert_one_line_error(cli("translate", "--model", model_dir, "-i", tmp_path / "nope.txt"), "nope.txt")
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"\x00" * 64)
    assert_one_line_error(cli("translate", "--model", broken, input="x\n"), "model.safetensors")
    foreign = tmp_path / "foreign"
    shutil.copytree(model_dir, foreign)
    config = json.loads((foreign / "config.json").read_text())
    config["model"]["d_model"] = 64
    config["model"]["n_heads"] = 4
    (foreign / "config.json").write_text(json.dumps(config))
    assert_one_line_error(cli("translate", "--model", foreign, input="x\n"), "model.safetensors")
    mismatch = tmp_path / "mismatch"
    shutil.copytree(model_dir, mismatch)
    from data.tokenizer import train_bpe

    train_bpe(["something else entirely"] * 5, 50, 1).save(str(mismatch / "tokenizer.json"))
    assert_one_line_error(cli("translate", "--model", mismatch, input="x\n"), "tokenizer")
    incomplete = tmp_path / "incomplete"
    shutil.copytree(model_dir, incomplete)
    (incomplete / "model.safetensors").unlink()
    assert_one_line_error(cli("translate", "--model", incomplete, input="x\n"), "no model.safetensors")


def test_pipe_startup_does_not_import_datasets(model_dir):
    code = ("import sys, cli.process; cli.process.leave = sys.exit  # keep the interpreter for the check below\n"
            "from cli.main import main; sys.argv = ['transformer-cli', 'translate', '--model', "
            f"{str(model_dir)!r}, '-b', '1']\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('datasets' in sys.modules, 'sacrebleu' in sys.modules, file=sys.stderr)\n"
            "print([m for m in ('transformers', 'ctranslate2', 'onnx', 'onnxruntime') if m in sys.modules], "
            "file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], input="I am a student.\n", capture_output=True,
                          text=True, cwd=REPO)
    assert proc.stdout.count("\n") == 1
    first, exporters = proc.stderr.strip().splitlines()[-2:]
    assert first.endswith("False False"), proc.stderr
    assert exporters == "[]", "the exporters' libraries are imported by export only"


def test_streams_each_line_as_it_arrives(model_dir):
    """tail -f style: a line is translated while stdin stays open."""
    import select
    import time

    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "translate", "--model", str(model_dir), "-b", "1"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    try:
        for sentence in (b"I am a student.\n", b"We went home.\n"):
            proc.stdin.write(sentence)
            proc.stdin.flush()
            ready, _, _ = select.select([proc.stdout], [], [], 60)
            assert ready, "no output while the input stays open"
            assert proc.stdout.readline().endswith(b"\n"), "one complete output line per input line"
            time.sleep(0.1)
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    assert proc.returncode == 0


def test_the_process_ends_with_every_line_written(model_dir, tmp_path):
    """translate ends without the interpreter's teardown (cli/process.py): nothing may be lost."""
    lines = "".join(f"{s} {i}\n" for i in range(150) for s in ("I am a student.", "We went home."))
    command = [sys.executable, "-m", "cli.main", "translate", "--model", str(model_dir), "-b", "1"]
    piped = subprocess.run(command, input=lines, capture_output=True, text=True, cwd=REPO)
    assert piped.returncode == 0 and piped.stderr == "", piped.stderr
    assert piped.stdout.count("\n") == 300
    with open(tmp_path / "redirected.txt", "w") as out:  # stdout a regular file (shell redirection)
        assert subprocess.run(command, input=lines, stdout=out, text=True, cwd=REPO).returncode == 0
    assert (tmp_path / "redirected.txt").read_text() == piped.stdout
    named = subprocess.run([*command, "-o", str(tmp_path / "named.txt")], input=lines, text=True, cwd=REPO)
    assert named.returncode == 0 and (tmp_path / "named.txt").read_text() == piped.stdout
    closed = subprocess.run(f"{' '.join(command)} | head -1", shell=True, input=lines, capture_output=True,
                            text=True, cwd=REPO)  # the reader goes away: quiet, as before
    assert closed.stdout.count("\n") == 1 and closed.stderr == ""


def test_read_chunks_splits_lines_and_keeps_the_last_partial_line(tmp_path):
    from data.textfiles import read_chunks

    path = tmp_path / "in.txt"
    path.write_bytes(b"a\nb\n\nc" + b"x" * 200_000)
    with open(path, "rb") as f:
        chunks = list(read_chunks(f, 2))
    lines = [line for chunk in chunks for line in chunk]
    assert lines == [b"a\n", b"b\n", b"\n", b"c" + b"x" * 200_000]
    assert all(len(c) <= 2 for c in chunks)


def test_interactive_prompt_on_a_terminal(model_dir):
    import os
    import pty
    import select

    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "translate", "--model", str(model_dir), "-b", "1"],
                            stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    os.close(slave)
    try:
        ready, _, _ = select.select([proc.stderr], [], [], 60)
        assert ready and proc.stderr.read1(16).startswith(b"> "), "a prompt on stderr"
        os.write(master, b"I am a student.\n")
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready and proc.stdout.readline().endswith(b"\n")
        os.write(master, b"\x04")  # Ctrl-D ends the session
        assert proc.wait(timeout=60) == 0
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()


def test_bf16_precision(cli, model_dir):
    result = cli("translate", "--model", model_dir, "--precision", "bf16", "-b", "2", input="I am a student.\n\n")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.count("\n") == 2


def test_cli_search_defaults_are_the_library_defaults():
    """`translate`'s flags default to SearchOptions' defaults, but for those a run's search.json may
    set: left out, they are the run's (transformer_cli/search_defaults.py, tests/cli/test_search_defaults_cli.py)."""
    import typer

    from cli.main import app
    from transformer_cli import SearchOptions

    command = typer.main.get_command(app).commands["translate"]
    flags = {p.name: p.default for p in command.params}
    library = SearchOptions()
    for name in ("n_best", "max_len_a", "max_len_b", "batch_tokens"):
        assert flags[name] == getattr(library, name), name
    for name in ("beam_size", "length_penalty", "length_style"):
        assert flags[name] is None, name


def test_sampling_flags_reproducible_per_seed(cli, model_dir):
    text = "I am a student.\nThey buy tea often.\nWe went home.\n"
    flags = ["--beam-size", "1", "--sampling-topk", "0", "--temperature", "1.5"]
    one = cli("translate", "--model", model_dir, *flags, "--seed", "7", input=text)
    assert one.exit_code == 0, one.stderr
    assert len(one.stdout.splitlines()) == 3
    assert cli("translate", "--model", model_dir, *flags, "--seed", "7", input=text).stdout == one.stdout
    seeds = {cli("translate", "--model", model_dir, *flags, "--seed", str(s), input=text).stdout for s in range(4)}
    assert len(seeds) > 1, "other seeds draw other outputs"
    samples = cli("translate", "--model", model_dir, *flags, "--n-best", "4", "--format", "jsonl",
                  input="We went home.\n")
    record = json.loads(samples.stdout)
    assert len(record["nbest"]) == 4
    greedy = cli("translate", "--model", model_dir, "-b", "1", input=text)
    top1 = cli("translate", "--model", model_dir, "-b", "1", "--sampling-topk", "1", "--seed", "3", input=text)
    assert top1.stdout == greedy.stdout


def test_repetition_flags(cli, model_dir):
    text = "My father watches a play at the library.\nI am a student.\n"
    for beam in ("1", "3"):
        out = cli("translate", "--model", model_dir, "-b", beam, "--no-repeat-ngram-size", "2",
                  "--repetition-penalty", "1.3", "--format", "jsonl", input=text)
        assert out.exit_code == 0, out.stderr
        for line in out.stdout.splitlines():
            tokens = json.loads(line)["tokens"]
            bigrams = list(zip(tokens, tokens[1:]))
            assert len(bigrams) == len(set(bigrams)), tokens


@pytest.mark.parametrize("flags, words", [
    (["--sampling-topk", "10"], ["--beam-size", "1"]),
    (["-b", "1", "--sampling-topp", "1.5"], ["--sampling-topp"]),
    (["-b", "1", "--sampling-topk", "0", "--temperature", "0"], ["--temperature"]),
    (["--no-repeat-ngram-size", "-2"], ["--no-repeat-ngram-size"]),
    (["--repetition-penalty", "0"], ["--repetition-penalty"]),
])
def test_bad_search_flags_one_line(cli, model_dir, flags, words):
    assert_one_line_error(cli("translate", "--model", model_dir, *flags, input="x\n"), *words)
