import io
import json
import math
import re

import pytest
import torch
from rich.console import Console

from cli.render import AttentionGrid, attention_table, fit_tables
from tests_shared import assert_one_line_error
from transformer.checkpoint import load_model
from transformer.embeddings import sinusoidal_table


def inspect_json(cli, model_dir, *args):
    result = cli("inspect-attention", "--model", model_dir, "--format", "json", *args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def heads_of(model, layer, x):
    """q, k of one attention module computed by hand: (heads, len, d_k)."""
    c = model.config
    def proj(lin):
        return (x @ lin.weight.T + lin.bias).view(x.size(0), c.n_heads, c.d_k).transpose(0, 1)
    return proj(layer.q_proj), proj(layer.k_proj)


def test_maps_equal_an_independent_computation(cli, model_dir):
    doc = inspect_json(cli, model_dir, "I am a student.", "--layer", "1", "--head", "all")
    model = load_model(model_dir)
    c = model.config
    from data.tokenizer import Tokenizers

    toks = Tokenizers.load(model_dir)
    src = toks.src.encode("I am a student.", add_special_tokens=False).ids + [3]
    pe = sinusoidal_table(c.max_len, c.d_model)
    with torch.no_grad():
        x = model.src_embed.weight[src] * math.sqrt(c.d_model) + pe[: len(src)]
        q, k = heads_of(model, model.encoder.layers[0].self_attn, x)
        enc = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(c.d_k), -1)
        tgt_in = [toks.tgt.token_to_id(t) for t in doc["target_input_tokens"]]
        y = model.tgt_embed.weight[tgt_in] * math.sqrt(c.d_model) + pe[: len(tgt_in)]
        q, k = heads_of(model, model.decoder.layers[0].self_attn, y)
        scores = (q @ k.transpose(-1, -2) / math.sqrt(c.d_k)).masked_fill(
            torch.ones(len(tgt_in), len(tgt_in)).triu(1).bool(), float("-inf"))
        dec = torch.softmax(scores, -1)
    assert {m["kind"] for m in doc["maps"]} >= {"encoder", "decoder"}, "both kinds are compared"
    for m in doc["maps"]:
        if m["kind"] == "encoder":
            assert m["rows"] == m["columns"] == doc["source_tokens"]
            torch.testing.assert_close(torch.tensor(m["weights"]), enc[m["head"] - 1], atol=1e-5, rtol=1e-4)
        if m["kind"] == "decoder":
            expected = dec[m["head"] - 1]
            for i, row in enumerate(m["weights"]):
                for j, v in enumerate(row):
                    if j > i:
                        assert v is None and m["scores"][i][j] is None, "masked, not 0.00"
                    else:
                        assert v == pytest.approx(float(expected[i, j]), abs=1e-5)


def test_json_round_trips_the_model_maps(cli, model_dir):
    doc = inspect_json(cli, model_dir, "We went home.", "--layer", "all", "--head", "all")
    from transformer_cli import load_run

    result = load_run(model_dir).inspect("We went home.")
    assert doc["translation"] == result.translation
    by_key = {(m["kind"], m["layer"], m["head"]): m for m in doc["maps"]}
    for kind, recs in (("encoder", result.maps.encoder), ("decoder", result.maps.decoder),
                       ("cross", result.maps.cross)):
        for layer, rec in enumerate(recs, 1):
            for head in range(rec.weights.size(1)):
                got = torch.tensor([[0.0 if v is None else v for v in row]
                                    for row in by_key[(kind, layer, head + 1)]["weights"]])
                torch.testing.assert_close(got, rec.weights[0, head], atol=1e-6, rtol=1e-5)


def test_target_gives_teacher_forced_maps(cli, model_dir):
    doc = inspect_json(cli, model_dir, "I am a student.", "--target", "나는 학생이다.", "--kind", "cross")
    assert doc["translation"] == "나는 학생이다."
    (m,) = doc["maps"]
    assert m["rows"] == doc["output_tokens"] and m["rows"][-1] == "</s>"
    assert m["columns"] == doc["source_tokens"]
    for row in m["weights"]:
        assert sum(row) == pytest.approx(1.0, abs=1e-5)


def render(table, width=100) -> str:
    buf = io.StringIO()
    Console(file=buf, width=width, color_system=None).print(table)
    return buf.getvalue()


def test_table_rendering_tokens_values_masks_and_sums():
    grid = AttentionGrid("decoder", ["<s>", "▁나는", "▁학생"], ["<s>", "▁나는", "▁학생"],
                         [[1.0, None, None], [0.25, 0.75, None], [0.1, 0.2, 0.7]])
    text = render(attention_table(grid))
    assert "▁나는" in text and "▁학생" in text
    lines = [l for l in text.splitlines() if l.startswith("│")]
    assert len(lines) == 3
    for line in lines:
        numbers = [float(x) for x in re.findall(r"\d\.\d\d", line)]
        assert sum(numbers) == pytest.approx(1.0, abs=0.011)
    assert lines[0].count("·") == 2 and lines[1].count("·") == 1 and "0.00" not in text
    assert "\x1b[" not in text


def test_long_sentences_wrap_in_column_blocks():
    tokens = [f"▁tok{i}" for i in range(40)]
    grid = AttentionGrid("encoder", tokens, tokens, [[1 / 40] * 40 for _ in range(40)])
    tables = fit_tables(grid, 80)
    assert len(tables) > 1
    for t in tables:
        assert all(len(line) <= 80 for line in render(t, 80).splitlines())
    assert "columns 1–" in render(tables[0], 80) and "of 40" in render(tables[-1], 80)


def test_cli_tables_summary_and_alignment(cli, model_dir):
    result = cli("inspect-attention", "--model", model_dir, "I am a student.", "--heads-summary", "--align",
                 "--scores", "--kind", "cross")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "cross-attention" in out and "scores" in out and "▁student" in out
    assert "attention heads" in out and "word alignment" in out
    assert "\x1b[" not in out, "no colour codes when not a terminal"
    summary_rows = [l for l in out.split("attention heads")[1].splitlines() if l.startswith("│ cross")]
    assert len(summary_rows) == 2, "one row per head of the last layer"
    piped = cli("inspect-attention", "--model", model_dir, "--kind", "encoder", "--max-tokens", "3",
                input="I am a student.\n")
    assert piped.exit_code == 0 and "first 3 tokens" in piped.stdout


def test_errors(cli, model_dir, tmp_path):
    assert_one_line_error(cli("inspect-attention", "--model", tmp_path / "none", "hi"), "not found")
    assert_one_line_error(cli("inspect-attention", "--model", model_dir, "   "), "empty sentence")
    assert_one_line_error(cli("inspect-attention", "--model", model_dir, "hi", "--layer", "7"),
                          "--layer 7 does not exist", "1-1")
    assert_one_line_error(cli("inspect-attention", "--model", model_dir, "hi", "--head", "0"),
                          "--head 0 does not exist", "1-2")
    assert_one_line_error(cli("inspect-attention", "--model", model_dir, "hi", "--kind", "self"), "--kind")
    assert_one_line_error(cli("inspect-attention", "--model", model_dir, "hi", "--format", "png"), "--output")


def test_png_export(cli, model_dir, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "maps.png"
    result = cli("inspect-attention", "--model", model_dir, "I am a student.", "--format", "png", "-o", out)
    assert result.exit_code == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_all_heads_side_by_side_when_wide(cli, model_dir, monkeypatch):
    from cli import console

    buf = io.StringIO()
    monkeypatch.setattr(console, "out", Console(file=buf, width=220, color_system=None))
    result = cli("inspect-attention", "--model", model_dir, "I am a student.", "--kind", "encoder",
                 "--head", "all")
    assert result.exit_code == 0, result.stderr
    text = buf.getvalue()
    header = next(l for l in text.splitlines() if "head 1" in l)
    assert "head 2" in header, "the two heads' tables share lines"
    narrow = io.StringIO()
    monkeypatch.setattr(console, "out", Console(file=narrow, width=60, color_system=None))
    cli("inspect-attention", "--model", model_dir, "I am a student.", "--kind", "encoder", "--head", "all")
    assert not any("head 1" in l and "head 2" in l for l in narrow.getvalue().splitlines())


def test_wide_hangul_tokens_never_squeezed():
    cols = ["▁My", "▁friend", "▁drinks", "▁coffee", "▁at", "▁the", "▁cafe", ".", "</s>"]
    rows = ["▁내", "▁친구는", "▁카페에서", "▁커피를", "▁마신다", ".", "</s>"]
    grid = AttentionGrid("cross", rows, cols, [[1 / 9] * 9 for _ in rows])
    for width in (60, 80):
        text = "".join(render(t, width) for t in fit_tables(grid, width))
        assert "…" not in text, "no cell or header cut short"
        for tok in cols:
            assert tok in text
        assert all(len(line) <= width for line in text.splitlines())


def test_word_grouping_of_subwords():
    from transformer_cli.translator import words as words_of
    from transformer_cli.translator import word_index

    pieces = ["▁Ein", "▁Hund", "▁renn", "t", "▁durch", "▁den", "▁Schnee", "."]
    assert word_index(pieces) == [0, 1, 2, 2, 3, 4, 5, 6]
    assert words_of(pieces) == ["Ein", "Hund", "rennt", "durch", "den", "Schnee", "."]
    assert word_index(["▁(", "x", ")", "▁y"]) == [0, 1, 2, 3]


def test_colour_backgrounds_and_no_color(model_dir):
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    args = [sys.executable, "-m", "cli.main", "inspect-attention", "--model", str(model_dir), "I am a student.",
            "--kind", "encoder"]
    base = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "TERM")}
    coloured = subprocess.run(args, capture_output=True, text=True, cwd=repo,
                              env={**base, "FORCE_COLOR": "1", "TERM": "xterm-256color", "COLUMNS": "120"})
    assert coloured.returncode == 0, coloured.stderr
    assert re.search(r"\x1b\[[0-9;]*48;[25];", coloured.stdout), "weights drawn on a background colour"
    plain = subprocess.run(args, capture_output=True, text=True, cwd=repo,
                           env={**base, "FORCE_COLOR": "1", "NO_COLOR": "1", "COLUMNS": "120"})
    assert not re.search(r"\x1b\[[0-9;]*[34]8;", plain.stdout), "NO_COLOR: no colour codes"
    assert "0." in plain.stdout


def test_decoder_scores_table_shows_minus_inf_above_the_diagonal(cli, model_dir):
    result = cli("inspect-attention", "--model", model_dir, "I am a student.", "--target", "나는 학생이다.",
                 "--kind", "decoder", "--scores")
    assert result.exit_code == 0, result.stderr
    scores = result.stdout.split("scores QKᵀ/√d_k")[1]
    rows = [line for line in scores.splitlines() if line.startswith("│")]
    assert len(rows) >= 3
    for i, row in enumerate(rows):
        assert row.count("-inf") == len(rows) - 1 - i, row  # row t: keys t+1.. are the future


def test_inspect_with_a_beam_shows_the_beam_translation(cli, model_dir):
    sentence = "My friend drinks coffee at the cafe."
    translated = cli("translate", "--model", model_dir, "-b", "3", input=sentence + "\n")
    shown = cli("inspect-attention", "--model", model_dir, sentence, "-b", "3", "--format", "json")
    assert translated.exit_code == 0 and shown.exit_code == 0, shown.stderr
    assert json.loads(shown.stdout)["translation"] == translated.stdout.rstrip("\n")


def test_checkpoint_maps_use_that_checkpoints_weights(cli, model_dir):
    from safetensors.torch import load_file

    from transformer_cli import load_run

    ckpt = sorted((model_dir / "checkpoints").iterdir())[-1]
    translator = load_run(model_dir, checkpoint=ckpt.name, pack=False)
    saved = load_file(str(ckpt / "model.safetensors"))
    for name, tensor in saved.items():
        assert torch.equal(translator.model.state_dict()[name], tensor)
    step = str(int(ckpt.name.split("-")[1]))  # "step-0000030" and "30" both name it
    result = cli("inspect-attention", "--model", model_dir, "I am a student.", "--checkpoint", step, "--kind", "cross")
    assert result.exit_code == 0, result.stderr
    missing = cli("inspect-attention", "--model", model_dir, "I am a student.", "--checkpoint", "step-999999")
    assert missing.exit_code != 0 and "no checkpoint 'step-999999'" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_compare_with_itself_differs_by_zero(cli, model_dir):
    result = cli("inspect-attention", "--model", model_dir, "I am a student.", "--kind", "cross",
                 "--compare", str(model_dir), "--diff")
    assert result.exit_code == 0, result.stderr
    cells = [c.strip() for line in result.stdout.splitlines() if line.startswith("│")
             for c in line.split("│")[2:] if c.strip()]
    assert cells and all(c in ("+0.00", "-0.00") for c in cells)


def test_compare_shows_both_models(cli, model_dir):
    ckpt = sorted((model_dir / "checkpoints").iterdir())[0].name
    result = cli("inspect-attention", "--model", model_dir, "I am a student.", "--kind", "encoder",
                 "--compare", ckpt)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.count(f"{ckpt} · encoder self-attention") == 1
    assert result.stdout.count(f"{model_dir.name} · encoder self-attention") == 1


@pytest.mark.parametrize("args,message", [
    (["--diff"], "--diff needs --compare"),
    (["--compare", "step-1", "--format", "json"], "--compare shows tables"),
])
def test_compare_flag_errors(cli, model_dir, args, message):
    result = cli("inspect-attention", "--model", model_dir, "I am a student.", *args)
    assert result.exit_code != 0 and message in result.stderr and "Traceback" not in result.stderr


def test_models_with_other_tokenizers_are_not_compared(model_dir):
    from transformer_cli import RunError, load_run
    from transformer_cli.maps import check_comparable

    a, b = load_run(model_dir, pack=False), load_run(model_dir, pack=False)
    b.toks.fingerprint = lambda: "another tokenizer"
    with pytest.raises(RunError, match="tokenizer differs"):
        check_comparable(a, b, "other")


@pytest.fixture(scope="module")
def other_model_dir(demo_data, tmp_path_factory):
    """A second run on the same prepared data (same tokenizer and shape as model_dir), another seed:
    its attention maps differ from model_dir's."""
    from typer.testing import CliRunner

    from cli.main import app

    run = tmp_path_factory.mktemp("other") / "run"
    result = CliRunner().invoke(app, ["train", "--data", str(demo_data), "--out", str(run), "--preset", "tiny",
                                      "--d-model", "32", "--heads", "2", "--d-ff", "64", "--layers", "1",
                                      "--max-steps", "10", "--eval-every", "10", "--eval-samples", "2",
                                      "--threads", "1", "--max-len", "40", "--seed", "7"])
    assert result.exit_code == 0, result.output
    return run


def diff_tables(stdout: str) -> list[tuple[str, list[list[float]]]]:
    """(title, cells) of each table --diff printed; a masked cell ('·') is nan."""
    tables, title, rows = [], [], None
    for line in stdout.splitlines():
        if line.startswith("┏"):
            rows = []
            tables.append((" ".join(title), rows))
        elif line.startswith("│") and rows is not None:
            rows.append([math.nan if c.strip() == "·" else float(c) for c in line.split("│")[2:-1]])
        elif line.startswith("└"):
            title, rows = [], None
        elif rows is None:
            title.append(line.strip())
    return tables


def teacher_forced_maps(model_dir, src_tokens: list[str], tgt_in_tokens: list[str]):
    """A run's attention maps of one (source, decoder input) pair, from its model's forward pass."""
    from transformer_cli import load_run

    translator = load_run(model_dir, pack=False)
    src, tgt = ([tok.token_to_id(t) for t in tokens] for tok, tokens in
                ((translator.toks.src, src_tokens[:-1]), (translator.toks.tgt, tgt_in_tokens)))
    with torch.no_grad():
        _, maps = translator.model(translator.tensor([src]), torch.tensor([tgt]), return_attention=True)
    return maps


@pytest.mark.parametrize("kind", ["encoder", "cross"])
def test_compare_diff_is_the_other_models_maps_minus_this_ones(cli, model_dir, other_model_dir, kind):
    from transformer_cli import load_run

    text = "I am a student."
    result = cli("inspect-attention", "--model", model_dir, text, "--kind", kind, "--head", "all",
                 "--compare", str(other_model_dir), "--diff")
    assert result.exit_code == 0, result.stderr
    mine = load_run(model_dir, pack=False).inspect(text)  # both read this model's own output
    this, other = (getattr(teacher_forced_maps(run, mine.src_tokens, mine.tgt_in_tokens), kind)[-1].weights[0]
                   for run in (model_dir, other_model_dir))  # (heads, query, key)
    expected = other - this
    tables = diff_tables(result.stdout)
    assert len(tables) == expected.size(0), result.stdout
    for head, (title, cells) in enumerate(tables):
        assert f"head {head + 1}" in title and f"{other_model_dir} − {model_dir.name}" in title
        assert torch.tensor(cells).shape == expected[head].shape
        torch.testing.assert_close(torch.tensor(cells), expected[head], atol=0.0051, rtol=0)
    assert expected.abs().max() > 0.05, "the two models' maps differ, so a wrong sign would fail"
