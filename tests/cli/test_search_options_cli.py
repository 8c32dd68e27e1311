"""translate's target prefix, --score-reference, ensembles and --replace-unk, end to end on the demo model."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests_shared import assert_one_line_error

SOURCES = ["I am a student.", "They buy tea often.", "We went home.", "My father watches a play at the library."]
PREFIXES = ["나는", "", "우리는 집", "아버지"]


def jsonl(result):
    assert result.exit_code == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.fixture(scope="module")
def other_run(model_dir, tmp_path_factory):
    """The demo run with its weights moved a little: another model with the same vocabularies."""
    run = tmp_path_factory.mktemp("other") / "run"
    shutil.copytree(model_dir, run)
    weights = load_file(run / "model.safetensors")
    g = torch.Generator().manual_seed(1)
    save_file({k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in weights.items()},
              run / "model.safetensors")
    return run


@pytest.mark.parametrize("beam", ["1", "3"])
def test_every_translation_starts_with_its_prefix(cli, model_dir, tmp_path, beam):
    prefixes = tmp_path / "prefixes.txt"
    prefixes.write_text("\n".join(PREFIXES) + "\n", encoding="utf-8")
    src = "\n".join(SOURCES) + "\n"
    forced = cli("translate", "--model", model_dir, "-b", beam, "--prefix-file", prefixes, input=src)
    free = cli("translate", "--model", model_dir, "-b", beam, input=src)
    assert forced.exit_code == 0, forced.stderr
    for prefix, out, plain in zip(PREFIXES, forced.stdout.splitlines(), free.stdout.splitlines()):
        assert out.startswith(prefix)
        if not prefix:
            assert out == plain, "an empty prefix line changes nothing"


def test_prefix_file_with_other_line_count_is_one_error_and_writes_nothing(cli, model_dir, tmp_path):
    prefixes, out = tmp_path / "prefixes.txt", tmp_path / "out.txt"
    prefixes.write_text("나는\n", encoding="utf-8")
    result = cli("translate", "--model", model_dir, "--prefix-file", prefixes, "-o", out, input="a\nb\n")
    assert_one_line_error(result, "prefixes.txt", "fewer than the input")
    assert not out.exists()
    prefixes.write_text("나는\n\n\n", encoding="utf-8")
    result = cli("translate", "--model", model_dir, "--prefix-file", prefixes, "-o", out, input="a\nb\n")
    assert_one_line_error(result, "prefixes.txt", "more lines than the input")
    assert not out.exists()


@pytest.mark.parametrize("beam", ["1", "3"])
def test_tsv_lines_carry_their_prefixes_as_a_prefix_file_does(cli, model_dir, tmp_path, beam):
    prefixes = tmp_path / "prefixes.txt"
    prefixes.write_text("\n".join(PREFIXES) + "\n", encoding="utf-8")
    from_file = cli("translate", "--model", model_dir, "-b", beam, "--prefix-file", prefixes,
                    input="\n".join(SOURCES) + "\n")
    tsv_lines = [f"{s}\t{p}" if p else s for s, p in zip(SOURCES, PREFIXES)]  # no TAB: no prefix
    from_tsv = cli("translate", "--model", model_dir, "-b", beam, "--tsv", "--format", "jsonl",
                   input="\n".join(tsv_lines) + "\n")
    records = jsonl(from_tsv)
    assert [r["translation"] for r in records] == from_file.stdout.splitlines()
    for prefix, record in zip(PREFIXES, records):
        assert record["translation"].startswith(prefix)
    assert [r["source"] for r in records] == SOURCES, "the prefix is not part of the source"


def test_tsv_line_with_two_tabs_is_one_error_naming_it_and_writes_nothing(cli, model_dir, tmp_path):
    out = tmp_path / "out.txt"
    result = cli("translate", "--model", model_dir, "--tsv", "-o", out, input="a\tb\nc\td\te\n")
    assert_one_line_error(result, "input line 2 has 2 TABs", "--tsv")
    assert not out.exists()


@pytest.mark.parametrize("other", ["--prefix-file", "--score-reference"])
def test_tsv_with_another_source_of_targets_is_refused_before_loading(cli, tmp_path, other):
    given = tmp_path / "targets.txt"
    given.write_text("a\n", encoding="utf-8")
    result = cli("translate", "--model", tmp_path / "no-such-run", "--tsv", other, given, input="a\n")
    assert_one_line_error(result, "--tsv", other)


@pytest.mark.parametrize("beam", ["1", "4"])
def test_score_reference_gives_translate_its_own_log_probabilities(cli, model_dir, tmp_path, beam):
    src = "\n".join(SOURCES) + "\n"
    found = jsonl(cli("translate", "--model", model_dir, "-b", beam, "--format", "jsonl", "--length-penalty", "0",
                      input=src))
    refs = tmp_path / "refs.txt"
    refs.write_text("\n".join(r["translation"] for r in found) + "\n", encoding="utf-8")
    scored = jsonl(cli("translate", "--model", model_dir, "--score-reference", refs, "--format", "jsonl",
                       "--length-penalty", "0", input=src))
    plain = cli("translate", "--model", model_dir, "--score-reference", refs, "--length-penalty", "0", input=src)
    same = 0
    for f, s, line in zip(found, scored, plain.stdout.splitlines(), strict=True):
        assert s["tokens"][-1] == "</s>" and s["log_prob"] == pytest.approx(sum(s["token_logprobs"]), abs=1e-4)
        assert float(line) == pytest.approx(s["score"], abs=1e-4) and s["score"] == pytest.approx(s["log_prob"])
        body = f["tokens"][:-1] if f["tokens"][-1] == "</s>" else f["tokens"]
        if s["tokens"][:-1] == body:  # the text re-encodes to the pieces the search produced
            same += 1
            n = len(f["tokens"])  # with or without its </s>: the search's own tokens
            assert s["token_logprobs"][:n] == pytest.approx(f["token_logprobs"], abs=1e-4)
    assert same


def test_score_reference_refusals(cli, model_dir, tmp_path):
    refs = tmp_path / "refs.txt"
    refs.write_text("하나\n", encoding="utf-8")
    assert_one_line_error(cli("translate", "--model", model_dir, "--score-reference", refs, input="a\nb\n"),
                          "refs.txt", "fewer than the input")
    assert_one_line_error(cli("translate", "--model", model_dir, "--score-reference", refs, "-b", "1",
                              "--sampling-topk", "5", input="a\n"), "--score-reference", "--sampling-topk")
    assert_one_line_error(cli("translate", "--model", model_dir, "--score-reference", refs, "--scores",
                              input="a\n"), "--scores")
    assert_one_line_error(cli("translate", "--model", model_dir, "--score-reference", tmp_path / "none.txt",
                              input="a\n"), "none.txt")


def test_an_ensemble_of_one_model_twice_is_the_model(cli, model_dir):
    src = "\n".join(SOURCES) + "\n"
    alone = jsonl(cli("translate", "--model", model_dir, "--format", "jsonl", input=src))
    twice = jsonl(cli("translate", "--model", model_dir, "--model", model_dir, "--format", "jsonl", input=src))
    assert [r["translation"] for r in twice] == [r["translation"] for r in alone]
    assert [r["score"] for r in twice] == pytest.approx([r["score"] for r in alone], abs=1e-4)


def test_an_ensemble_of_two_models_searches_their_mean(model_dir, other_run):
    from transformer_cli import SearchOptions, load_ensemble, load_run

    a, b, both = load_run(model_dir), load_run(other_run), load_ensemble([model_dir, other_run])
    refs = [t.text for t in both.translate(SOURCES, SearchOptions(beam_size=1))]
    mean = [(x.score + y.score) / 2 for x, y in zip(a.score(SOURCES, refs, SearchOptions(length_penalty=0)),
                                                   b.score(SOURCES, refs, SearchOptions(length_penalty=0)))]
    ensemble = both.score(SOURCES, refs, SearchOptions(length_penalty=0))
    for m, e in zip(mean, ensemble):  # renormalised: the ensemble's log P is at least the mean of the members'
        assert e.score >= m - 1e-4


def test_an_ensemble_of_different_vocabularies_is_refused(cli, model_dir, imported_run):
    result = cli("translate", "--model", model_dir, "--model", imported_run, input="a\n")
    assert_one_line_error(result, "cannot ensemble", "vocabularies differ")


def test_replace_unk_copies_the_most_attended_source_token(model_dir):
    from data.tokenizer import EOS_ID, UNK_ID
    from transformer_cli import SearchOptions, load_run
    from transformer_cli.unknowns import most_attended, source_pieces

    t = load_run(model_dir)
    source = "I saw 北京 today."  # characters neither vocabulary has: <unk> on both sides
    prefix = ["京"]  # forces an <unk> into the output
    plain = t.translate([source], SearchOptions(beam_size=2), prefix)[0]
    assert "<unk>" in plain.tokens
    fixed = t.translate([source], SearchOptions(beam_size=2, replace_unk=True), prefix)[0]
    assert "<unk>" not in fixed.tokens and fixed.ids == plain.ids
    src = source_pieces(t.toks.src, source)
    assert "北" in src and "京" in src, "the source's own <unk>s are kept as their text"
    record = t.teacher_force(plain.src_ids, plain.ids + [EOS_ID] if plain.tokens[-1] == "</s>" else plain.ids)
    source_of = most_attended(record.maps.cross[-1].weights[0], len(plain.src_ids))
    for pos, (i, piece) in enumerate(zip(plain.ids, fixed.tokens)):
        if i == UNK_ID:
            assert piece == src[source_of[pos]]
            assert piece.lstrip("▁") in fixed.text


def test_coverage_penalty_only_lowers_scores_and_reranks(cli, model_dir):
    """cp <= 0: every hypothesis both n-best lists hold scores no higher with the penalty, and each
    list stays sorted; --coverage-penalty 0 is the default search."""
    src = "\n".join(SOURCES) + "\n"
    args = ("translate", "--model", model_dir, "-b", "4", "--n-best", "4", "--format", "jsonl")
    plain, covered = jsonl(cli(*args, input=src)), jsonl(cli(*args, "--coverage-penalty", "0.4", input=src))
    assert len(covered) == len(SOURCES)
    lowered = 0
    for a, b in zip(plain, covered):
        scores = [h["score"] for h in b["nbest"]]
        assert scores == sorted(scores, reverse=True)
        before = {h["translation"]: h["score"] for h in a["nbest"]}
        for h in b["nbest"]:
            if h["translation"] in before:
                assert h["score"] <= before[h["translation"]] + 1e-6
                lowered += h["score"] < before[h["translation"]] - 1e-6
    assert lowered, "some source token of these sentences is under-attended"
    assert cli(*args, "--coverage-penalty", "0", input=src).stdout == cli(*args, input=src).stdout


def test_coverage_penalty_refusals_name_the_flags(cli, model_dir, tmp_path):
    assert_one_line_error(cli("translate", "--model", model_dir, "-b", "1", "--coverage-penalty", "0.2",
                              input="a\n"), "--coverage-penalty", "--beam-size")
    assert_one_line_error(cli("translate", "--model", model_dir, "--coverage-penalty", "-1", input="a\n"),
                          "--coverage-penalty")
    refs = tmp_path / "refs.txt"
    refs.write_text("하나\n", encoding="utf-8")
    assert_one_line_error(cli("translate", "--model", model_dir, "--score-reference", refs, "--coverage-penalty",
                              "0.2", input="a\n"), "--score-reference", "--coverage-penalty")
