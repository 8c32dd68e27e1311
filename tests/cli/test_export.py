"""export: each format loaded by its own engine agrees with our model on real sentences (greedy
tokens equal, logits/log-probabilities within float tolerance), and the README written beside it
runs as written."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from tests_shared import assert_one_line_error
from transformer_cli import SearchOptions, load_run

SENTENCES = ["I am a student.", "My friend drinks coffee at the cafe.", "The teacher went to the park yesterday.",
             "We read a book at the library every day.", "She is writing a letter.", "It is raining today."]


@pytest.fixture(scope="module")
def exported(model_dir, tmp_path_factory):
    from transformer_cli.exporters import export

    root = tmp_path_factory.mktemp("exports")
    return {f: export(model_dir, f, root / f) for f in ("hf", "ctranslate2", "onnx")}


@pytest.fixture(scope="module")
def ours(model_dir):
    translator = load_run(model_dir)
    greedy = translator.translate(SENTENCES, SearchOptions(beam_size=1))
    return translator, greedy


def same_greedy(theirs: list[int], mine) -> bool:
    """Their greedy ids (EOS stripped or not) equal ours; where ours stopped at the length limit
    without </s>, theirs may go on."""
    ended = mine.tokens[-1:] == ["</s>"]
    theirs = theirs[: theirs.index(EOS_ID)] if EOS_ID in theirs else theirs
    return theirs == mine.ids if ended else theirs[: len(mine.ids)] == mine.ids


def teacher_forced_logits(translator, text: str, out_ids: list[int]) -> torch.Tensor:
    src = translator.tensor(translator.encode([text]).ids)
    tgt = torch.tensor([[BOS_ID] + out_ids])
    with torch.no_grad():
        return translator.model(src, tgt)[0][0]  # (len + 1, vocab)


def test_hf_marian_agrees(exported, ours):
    from transformers import AutoTokenizer, MarianMTModel

    translator, greedy = ours
    tok = AutoTokenizer.from_pretrained(exported["hf"])
    hf = MarianMTModel.from_pretrained(exported["hf"]).eval()
    batch = tok(SENTENCES, return_tensors="pt", padding=True)
    assert batch["input_ids"][0].tolist()[: len(translator.encode(SENTENCES[:1]).ids[0]) + 1] == \
        translator.encode(SENTENCES[:1]).ids[0] + [EOS_ID]
    for text, mine in zip(SENTENCES, greedy):
        enc = tok([text], return_tensors="pt")
        out = hf.generate(**enc, num_beams=1, max_new_tokens=len(mine.ids) + 1)
        assert same_greedy(out[0].tolist()[1:], mine)
        with torch.no_grad():
            theirs = hf(**enc, decoder_input_ids=torch.tensor([[BOS_ID] + mine.ids])).logits[0]
        torch.testing.assert_close(theirs, teacher_forced_logits(translator, text, mine.ids), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("alpha", [1.0, 0.6])
def test_hf_beam_search_ranks_as_the_average_length_style(exported, ours, alpha):
    """transformers' beam search with early_stopping=True and <pad>/<s> banned (bad_words_ids) finds
    our n-best list of --length-style average, scores sum(log p) / |Y|^alpha equal: the same |Y|
    (tokens after the start token, </s> included) and the same stopping rule, given the same length
    limit (its max_length counts the start token). At alpha 1 our GNMT ranking differs for one of
    these sentences, so the test tells the styles apart."""
    from transformers import AutoTokenizer, MarianMTModel

    translator, k, limit = ours[0], 4, 20
    tok = AutoTokenizer.from_pretrained(exported["hf"])
    hf = MarianMTModel.from_pretrained(exported["hf"]).eval()
    options = dict(beam_size=k, n_best=k, length_penalty=alpha, max_len_a=0.0, max_len_b=limit)
    rows = translator.encode(SENTENCES).ids
    gnmt = [[h.tokens for h in nbest] for nbest in translator.search(rows, SearchOptions(**options))]
    average = translator.search(rows, SearchOptions(**options, length_style="average"))
    for text, mine in zip(SENTENCES, average):
        out = hf.generate(**tok([text], return_tensors="pt"), num_beams=k, num_return_sequences=k,
                          length_penalty=alpha, early_stopping=True, max_length=limit + 1,
                          bad_words_ids=[[PAD_ID], [BOS_ID]], output_scores=True, return_dict_in_generate=True)
        theirs = [ids[1:] for ids in out.sequences.tolist()]  # without the start token
        theirs = [ids[: ids.index(EOS_ID) + 1] if EOS_ID in ids else ids for ids in theirs]
        assert theirs == [h.tokens for h in mine], text
        assert out.sequences_scores.tolist() == pytest.approx([h.score for h in mine], abs=1e-4)
    assert alpha != 1.0 or gnmt != [[h.tokens for h in nbest] for nbest in average]


def test_ctranslate2_agrees(exported, ours):
    import ctranslate2
    from tokenizers import Tokenizer

    translator, greedy = ours
    tok = Tokenizer.from_file(str(exported["ctranslate2"] / "tokenizer.json"))
    engine = ctranslate2.Translator(str(exported["ctranslate2"]), intra_threads=1)
    source = [tok.encode(s).tokens + ["</s>"] for s in SENTENCES]
    for src, mine in zip(source, greedy):
        [result] = engine.translate_batch([src], beam_size=1, max_decoding_length=len(mine.ids) + 1)
        assert same_greedy([tok.token_to_id(t) for t in result.hypotheses[0]], mine)
    targets = [[tok.id_to_token(i) for i in g.ids] for g in greedy]
    scores = engine.score_batch(source, targets)
    for text, mine, scored in zip(SENTENCES, greedy, scores):
        logp = torch.log_softmax(teacher_forced_logits(translator, text, mine.ids), -1)
        expected = logp[torch.arange(len(mine.ids) + 1), torch.tensor(mine.ids + [EOS_ID])]
        np.testing.assert_allclose(scored.log_probs, expected.numpy(), atol=1e-3)


def onnx_greedy(path: Path, translator, text: str, steps: int):
    import onnxruntime as ort

    enc, dec = (ort.InferenceSession(str(path / f)) for f in ("encoder.onnx", "decoder.onnx"))
    ids = np.array([translator.encode([text]).ids[0] + [EOS_ID]], dtype=np.int64)
    cross = enc.run(None, {"source_ids": ids})
    c = translator.model.config
    n, d_k = c.n_decoder_layers, c.d_model // c.n_heads
    feed = {"source_mask": np.ones_like(ids)}
    feed.update({f"cross_{k}.{i}": cross[2 * i + j] for i in range(n) for j, k in enumerate(("key", "value"))})
    past = {f"past_{k}.{i}": np.zeros((1, c.n_heads, 0, d_k), np.float32) for i in range(n) for k in ("key", "value")}
    token, out, all_logits = BOS_ID, [], []
    for _ in range(steps):
        logits, *present = dec.run(None, {"input_ids": np.array([[token]]), **feed, **past})
        all_logits.append(logits[0])
        token = int(logits[0].argmax())
        if token == EOS_ID:
            break
        out.append(token)
        past = dict(zip(past, present))
    return out, np.stack(all_logits)


def test_onnx_agrees(exported, ours):
    translator, greedy = ours
    for text, mine in zip(SENTENCES, greedy):
        out, logits = onnx_greedy(exported["onnx"], translator, text, len(mine.ids) + 1)
        assert same_greedy(out, mine)
        expected = teacher_forced_logits(translator, text, mine.ids).numpy()
        np.testing.assert_allclose(logits, expected[: len(logits)], atol=1e-4)


@pytest.mark.parametrize("fmt", ["hf", "ctranslate2", "onnx"])
def test_the_readme_beside_the_model_runs_as_written(exported, fmt):
    readme = (exported[fmt] / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    done = subprocess.run([sys.executable, "-c", code], cwd=exported[fmt].parent, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip()


def test_int8_ctranslate2_translates(cli, model_dir, tmp_path):
    result = cli("export", "-m", model_dir, "-f", "ctranslate2", "-o", tmp_path / "q", "--quantization", "int8")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "q" / "config.json").read_text())["eos_token"] == "</s>"
    import ctranslate2

    out = ctranslate2.Translator(str(tmp_path / "q")).translate_batch([["▁I", "</s>"]], beam_size=2,
                                                                  max_decoding_length=30)
    assert out[0].hypotheses


def test_exporting_leaves_the_loaded_model_untouched(model_dir, tmp_path):
    from transformer_cli.exporters.ct2 import export_ctranslate2
    from transformer_cli.exporters.hf import export_hf

    translator = load_run(model_dir)
    before = {k: v.clone() for k, v in translator.model.state_dict().items()}
    for name, write in (("q", lambda out: export_ctranslate2(translator, out, "q", "int8")),
                        ("hf", lambda out: export_hf(translator, out, "hf"))):
        (tmp_path / name).mkdir()
        write(tmp_path / name)
    after = translator.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_export_errors(cli, model_dir, demo_data, tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "mine.txt").write_text("keep me")
    assert_one_line_error(cli("export", "-m", model_dir, "-f", "hf", "-o", taken), "not empty")
    assert_one_line_error(cli("export", "-m", model_dir, "-f", "hf", "-o", taken, "--overwrite"),
                          "not written by 'transformer-cli export'")
    assert (taken / "mine.txt").read_text() == "keep me"
    assert_one_line_error(cli("export", "-m", model_dir, "-f", "tflite", "-o", tmp_path / "x"), "--format")
    assert_one_line_error(cli("export", "-m", model_dir, "-f", "hf", "-o", tmp_path / "x", "--quantization", "int8"),
                          "ctranslate2 only")
    assert_one_line_error(cli("export", "-m", tmp_path / "nope", "-f", "hf", "-o", tmp_path / "y"), "not found")
    assert_one_line_error(cli("export", "-m", model_dir, "-f", "ctranslate2", "-o", tmp_path / "z",
                              "--quantization", "int9"), "int9")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no half-written export left"
    done = cli("export", "-m", model_dir, "-f", "hf", "-o", tmp_path / "again")
    assert done.exit_code == 0 and cli("export", "-m", model_dir, "-f", "hf", "-o", tmp_path / "again",
                                       "--overwrite").exit_code == 0


def test_an_untied_output_projection_exports_to_marian(cli, demo_data, tmp_path):
    from transformers import MarianMTModel

    from tests_shared import TINY_RUN
    from transformer_cli.exporters import export

    run = tmp_path / "untied"
    trained = cli("train", "--data", demo_data, "--out", run, *TINY_RUN, "--no-tie-output", "--max-steps", "4",
                  "--eval-every", "4")
    assert trained.exit_code == 0, trained.output
    hf = MarianMTModel.from_pretrained(export(run, "hf", tmp_path / "hf")).eval()
    translator = load_run(run)
    [mine] = translator.translate(SENTENCES[:1], SearchOptions(beam_size=1))
    src = translator.tensor(translator.encode(SENTENCES[:1]).ids)
    with torch.no_grad():
        theirs = hf(input_ids=src, decoder_input_ids=torch.tensor([[BOS_ID] + mine.ids])).logits[0]
    torch.testing.assert_close(theirs, teacher_forced_logits(translator, SENTENCES[0], mine.ids), atol=1e-4, rtol=1e-4)


def test_a_failed_overwrite_keeps_the_earlier_export(cli, model_dir, demo_data, tmp_path):
    from tests_shared import TINY_RUN

    assert cli("export", "-m", model_dir, "-f", "hf", "-o", tmp_path / "hf").exit_code == 0
    before = sorted(p.name for p in (tmp_path / "hf").iterdir())
    run = tmp_path / "pre"
    assert cli("train", "--data", demo_data, "--out", run, *TINY_RUN, "--norm", "pre", "--max-steps", "2",
               "--eval-every", "2").exit_code == 0
    assert_one_line_error(cli("export", "-m", run, "-f", "hf", "-o", tmp_path / "hf", "--overwrite"), "pre-norm")
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == before
    assert_one_line_error(cli("export", "-m", model_dir, "-f", "hf", "-o", "/"), "name a directory")


def test_a_pre_norm_model_is_refused_by_marian_and_taken_by_the_others(cli, demo_data, tmp_path):
    from tests_shared import TINY_RUN

    run = tmp_path / "pre"
    trained = cli("train", "--data", demo_data, "--out", run, *TINY_RUN, "--norm", "pre", "--max-steps", "2",
                  "--eval-every", "2")
    assert trained.exit_code == 0, trained.output
    assert_one_line_error(cli("export", "-m", run, "-f", "hf", "-o", tmp_path / "hf"), "pre-norm")
    translator = load_run(run)
    mine = translator.translate(SENTENCES[:2], SearchOptions(beam_size=1))
    assert cli("export", "-m", run, "-f", "ctranslate2", "-o", tmp_path / "ct2").exit_code == 0
    import ctranslate2
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tmp_path / "ct2" / "tokenizer.json"))
    engine = ctranslate2.Translator(str(tmp_path / "ct2"))
    for text, m in zip(SENTENCES[:2], mine):
        [got] = engine.translate_batch([tok.encode(text).tokens + ["</s>"]], beam_size=1,
                                       max_decoding_length=len(m.ids) + 1)
        assert same_greedy([tok.token_to_id(t) for t in got.hypotheses[0]], m)


@pytest.fixture(scope="module")
def separate_vocab_run(tmp_path_factory):
    """A run with one vocabulary per side (prepare --separate-vocab), trained until its greedy output
    depends on the source, and its CTranslate2 and ONNX exports."""
    from typer.testing import CliRunner

    from cli.main import app
    from data.prepare import PrepareOptions, prepare
    from tests_shared import TINY_RUN
    from transformer_cli.exporters import export

    root = tmp_path_factory.mktemp("separate")
    prepare(PrepareOptions("demo", "en", "ko", vocab_size=300, joint_vocab=False), root / "data")
    run = root / "run"
    trained = CliRunner().invoke(app, ["train", "--data", str(root / "data"), "--out", str(run), *TINY_RUN,
                                       "--max-steps", "300", "--eval-every", "300"])
    assert trained.exit_code == 0, trained.output
    return run, {f: export(run, f, root / f) for f in ("ctranslate2", "onnx")}


@pytest.mark.slow  # its model learns until its output depends on the source
def test_separate_vocabularies_export_to_ctranslate2_and_onnx(separate_vocab_run):
    import ctranslate2
    from tokenizers import Tokenizer

    run, exported = separate_vocab_run
    translator = load_run(run)
    assert not translator.toks.joint and not translator.model.config.share_embeddings
    greedy = translator.translate(SENTENCES, SearchOptions(beam_size=1))
    assert len({g.text for g in greedy}) > 1, "the model reads its source"
    src_tok, tgt_tok = (Tokenizer.from_file(str(exported["ctranslate2"] / f"tokenizer.{side}.json"))
                        for side in ("src", "tgt"))
    assert src_tok.get_vocab() != tgt_tok.get_vocab()
    engine = ctranslate2.Translator(str(exported["ctranslate2"]), intra_threads=1)
    for text, mine in zip(SENTENCES, greedy):
        [got] = engine.translate_batch([src_tok.encode(text).tokens + ["</s>"]], beam_size=1,
                                       max_decoding_length=len(mine.ids) + 1)
        assert same_greedy([tgt_tok.token_to_id(t) for t in got.hypotheses[0]], mine), text
        out, _ = onnx_greedy(exported["onnx"], translator, text, len(mine.ids) + 1)
        assert same_greedy(out, mine), text
