"""`transformer-cli import` and the commands on an imported OPUS-MT model: translate, inspect-attention,
explain and export work on it unchanged (ReLU nowhere in a swish model's lecture)."""

import json

import pytest

from data.tokenizer import encode_batch
from marian_fixture import multi30k_lines
from tests_shared import assert_one_line_error
from transformer_cli import load_run
from transformer_cli.translator import SearchOptions

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def imported_cli(cli, opus_mt_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli-import") / "run"
    result = cli("import", "--from", opus_mt_dir, "--out", out)
    assert result.exit_code == 0, result.output
    assert "de->en" in result.stdout and "swish" in result.stdout
    return out


@pytest.fixture(scope="module")
def cli():
    from typer.testing import CliRunner

    from cli.main import app

    runner = CliRunner()
    return lambda *args, input=None: runner.invoke(app, [str(a) for a in args], input=input)


def test_translate_reads_stdin_and_matches_the_library(cli, imported_cli):
    lines = multi30k_lines("test_2016_flickr", "de")[:12]
    result = cli("translate", "--model", imported_cli, "--beam-size", "1", input="\n".join(lines) + "\n")
    assert result.exit_code == 0, result.output
    expected = [t.text for t in load_run(imported_cli).translate(lines, SearchOptions(beam_size=1))]
    assert result.stdout.splitlines() == expected


def test_inspect_attention_json_has_every_kind(cli, imported_cli):
    result = cli("inspect-attention", "--model", imported_cli, "Ein Hund läuft.", "--format", "json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["source_tokens"][-1] == "</s>" and doc["target_input_tokens"][0] == "<s>"
    assert len(json.dumps(doc)) > 1000


def test_explain_shows_the_models_activation(cli, imported_cli):
    result = cli("explain", "--model", imported_cli, "Ein Hund läuft.")
    assert result.exit_code == 0, result.output
    assert "swish" in result.stdout and "ReLU" not in result.stdout


def test_ctranslate2_export_of_an_imported_model_translates_as_we_do(cli, imported_cli, tmp_path):
    ctranslate2 = pytest.importorskip("ctranslate2")
    result = cli("export", "--model", imported_cli, "--format", "ctranslate2", "--out", tmp_path / "ct2")
    assert result.exit_code == 0, result.output
    translator = load_run(imported_cli)
    engine = ctranslate2.Translator(str(tmp_path / "ct2"), device="cpu")
    lines = multi30k_lines("test_2016_flickr", "de")[:20]
    ours = translator.translate(lines, SearchOptions(beam_size=1, max_len_a=0, max_len_b=30))
    src = [[translator.toks.src.id_to_token(i) for i in ids] + ["</s>"] for ids in encode_batch(translator.toks.src, lines)]
    theirs = engine.translate_batch(src, beam_size=1, max_decoding_length=30)
    for o, t in zip(ours, theirs):
        assert [translator.toks.tgt.id_to_token(i) for i in o.ids] == [x for x in t.hypotheses[0]]


def test_refusals_are_one_line(cli, opus_mt_dir, tmp_path):
    assert_one_line_error(cli("import", "--from", tmp_path / "nowhere", "--out", tmp_path / "out"), "directory not found")
    (tmp_path / "bart").mkdir()
    (tmp_path / "bart" / "config.json").write_text(json.dumps({"model_type": "bart"}))
    assert_one_line_error(cli("import", "--from", tmp_path / "bart", "--out", tmp_path / "out"), "not Marian")
    assert_one_line_error(cli("import", "--from", opus_mt_dir, "--out", opus_mt_dir), "not an empty directory")
    assert not (tmp_path / "out").exists()
