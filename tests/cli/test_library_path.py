"""The library path from text to translations: stateless Translator, translate_lines/translate_files,
one teacher-forcing record, errors in the library's words and the command's."""

import json

import pytest
import torch

from tests_shared import assert_one_line_error
from transformer_cli import RunError, SearchOptions, load_run
from transformer_cli.stream import StreamStats, translate_files, translate_lines

LINES = ["I am a student.", "", "We read a book at the library every day."]


@pytest.fixture(scope="module")
def translator(model_dir):
    return load_run(model_dir)


def test_translate_lines_streams_chunks_in_order_and_counts(translator):
    stats = StreamStats()
    chunks = [[(t + "\n").encode() for t in LINES[:2]], [LINES[2].encode() + b"\n", b"\xff\xfe bad\n"]]
    out = list(translate_lines(translator, chunks, SearchOptions(beam_size=2), stats=stats))
    assert [len(block) for block in out] == [2, 2]
    texts = [r.text for r in translator.translate(LINES, SearchOptions(beam_size=2))]
    assert [line for block in out for line in block][:3] == texts and out[0][1] == ""
    assert (stats.lines, stats.invalid_utf8, stats.truncated) == (4, 1, 0)


def test_truncation_is_returned_not_counted_on_the_object(translator):
    long_text = " ".join(["student"] * 200)
    first = translator.translate([long_text, "I am a student."])
    assert [r.truncated for r in first] == [True, False]
    assert [r.truncated for r in translator.translate([long_text])] == [True]  # no count grows between calls
    assert not hasattr(translator, "truncated")
    stats = StreamStats()
    lines = list(translate_lines(translator, [[long_text.encode()]], fmt="jsonl", stats=stats))
    assert stats.truncated == 1 and json.loads(lines[0][0])["alignment"]  # alignment did not count again
    assert translator.inspect(long_text).truncated


def test_jsonl_truncation_warning_counts_each_line_once(cli, model_dir):
    text = " ".join(["student"] * 200) + "\nI am a student.\n"
    result = cli("translate", "-m", model_dir, "--format", "jsonl", input=text)
    assert result.exit_code == 0, result.stderr
    assert "warning: 1 line(s) longer than" in result.stderr


def test_translate_files_as_a_notebook_calls_it(translator, tmp_path):
    src, ref, out = tmp_path / "in.txt", tmp_path / "ref.txt", tmp_path / "out.txt"
    src.write_text("\n".join(LINES) + "\n")
    ref.write_text("\n".join(LINES) + "\n")
    report = translate_files(translator, [src], out, SearchOptions(beam_size=1), reference=ref)
    assert out.read_text().count("\n") == 3 and report.stats.lines == 3
    assert 0 <= report.scores.bleu <= 100 and report.scores.bleu_line.startswith("BLEU = ")
    ref.write_text("one line\n")
    with pytest.raises(RunError, match="has 1 lines but 3 lines were translated"):
        translate_files(translator, [src], None, reference=ref)


def test_inspect_is_search_then_the_one_teacher_forcing_pass(translator):
    record = translator.inspect("I am a student.")
    hyp = translator.search(translator.encode(["I am a student."]).ids, SearchOptions(beam_size=1))[0][0]
    assert record.out_ids == hyp.without_eos(3)
    forced = translator.teacher_force(record.src_ids, record.out_ids + [3])
    for a, b in zip(record.maps.cross, forced.maps.cross):
        assert torch.equal(a.weights, b.weights)
    assert record.log_probs.shape == (len(record.out_tokens), translator.model.config.tgt_vocab_size)
    torch.testing.assert_close(record.log_probs.exp().sum(-1), torch.ones(len(record.out_tokens), dtype=torch.float64))
    # the log-probability of each produced token is the search's own
    chosen = record.log_probs[torch.arange(len(hyp.tokens)), torch.tensor(hyp.tokens)]
    torch.testing.assert_close(chosen.float(), torch.tensor(hyp.token_logprobs).float(), atol=1e-4, rtol=0)


def test_library_errors_name_parameters_and_the_command_names_flags(model_dir, cli):
    with pytest.raises(RunError, match=r"^precision must be fp32, bf16 or int8"):
        load_run(model_dir, precision="fp8")
    with pytest.raises(RunError, match=r"^beam_size must be between 1 and 128, got 0"):
        SearchOptions(beam_size=0)
    with pytest.raises(RunError, match=r"^n_best 3 must be between 1 and beam_size 2"):
        SearchOptions(beam_size=2, n_best=3)
    assert_one_line_error(cli("translate", "-m", model_dir, "--precision", "fp8", input="x\n"),
                          "--precision must be fp32, bf16 or int8")
    assert_one_line_error(cli("translate", "-m", model_dir, "-b", "2", "--n-best", "3", "--format", "jsonl",
                              input="x\n"), "--n-best 3 must be between 1 and --beam-size 2")
    assert_one_line_error(cli("translate", "-m", model_dir, "--format", "xml", input="x\n"),
                          "--format must be text or jsonl")


def test_explain_warns_when_it_cuts_the_sentence(cli, model_dir):
    result = cli("explain", "-m", model_dir, " ".join(["student"] * 200))
    assert result.exit_code == 0, result.stderr
    assert "warning: the sentence is longer than" in result.stderr
