"""import of an OPUS-MT MarianMTModel directory: tokenisation equal to MarianTokenizer, greedy output
token-identical to MarianMTModel.generate, teacher-forced log-probabilities within 1e-4, beam search
equal to generate with the same length normalisation, and every refusal one RunError that writes
nothing. The directory is built offline by tests/marian_fixture.py (the hub is unreachable here)."""

import json
import shutil

import pytest
import torch

from data.tokenizer import EOS_ID, decode, encode_batch
from marian_fixture import build_opus_mt, multi30k_lines
from transformer_cli import load_run
from transformer_cli.errors import RunError
from transformer_cli.importers import import_marian
from transformer_cli.importers.marian import our_order
from transformer_cli.translator import SearchOptions

transformers = pytest.importorskip("transformers")

HOSTILE = ["", " ", "  Ein   Mann  ", "\t Tab\tund\nNeu", "Ǆ ﬁ ① Ⅻ ｶ", "中文 日本語 한국어", "😀👍🏽 emoji", "ab\u200bcd",
           "\u00e9 e\u0301", "Straße ÄÖÜ", "▁ leading ▁▁ marker", "x" * 3000, "Ein Hund. . .!!", "\x00\x01 control",
           "١٢٣ عربى", "Ω≈ç√∫", '"93" Kids\' q Y', "a >>fr<< b", "<<>> <>", "\ufeffBOM", "  ", "a\u3000b"]
# Not compared, on purpose (data/sentencepiece.py): a literal <s>, </s>, <pad> or <unk> in the text
# (MarianTokenizer reads three of them as control tokens; we read text as text), and a text starting
# with a >>xx<< code the vocabulary does not have (MarianTokenizer: <unk>; we: its characters).


@pytest.fixture(scope="module")
def hf(opus_mt_dir):
    return (transformers.MarianMTModel.from_pretrained(opus_mt_dir).eval(),
            transformers.MarianTokenizer.from_pretrained(opus_mt_dir))


@pytest.fixture(scope="module")
def ours(imported_run):
    return load_run(imported_run)


def marian_to_ours(opus_mt_dir, side="vocab.json"):
    vocab = json.loads((opus_mt_dir / side).read_text())
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    order = our_order(tokens, opus_mt_dir / side)
    back = {m: o for o, m in enumerate(order) if o != 2}  # Marian's <pad> is our <pad> (0), not <s> (2)
    return order, back


def test_tokenisation_equals_marian_tokenizer(opus_mt_dir, hf, ours):
    _, mt = hf
    _, back = marian_to_ours(opus_mt_dir)
    for side, lang, tok in (("source", "de", ours.toks.src), ("target", "en", ours.toks.tgt)):
        lines = multi30k_lines("test_2016_flickr", lang) + (HOSTILE if side == "source" else [])
        want = mt(lines)["input_ids"] if side == "source" else mt(text_target=lines)["input_ids"]
        got = encode_batch(tok, lines)
        for line, w, g in zip(lines, want, got):
            assert [back[i] for i in w] == g + [EOS_ID], (side, line[:80])


def test_decoding_equals_marian_tokenizer(opus_mt_dir, hf, ours):
    model, mt = hf
    _, back = marian_to_ours(opus_mt_dir)
    lines = multi30k_lines("test_2016_flickr", "de")[:64]
    with torch.no_grad():
        out = model.generate(**mt(lines, return_tensors="pt", padding=True), num_beams=1, max_new_tokens=40)
    for row in out.tolist():
        assert decode(ours.toks.tgt, [back[i] for i in row]) == mt.decode(row, skip_special_tokens=True)


def generate_ids(hf, lines, limits, **kwargs):
    """generate() per batch of 50, up to our longest limit; ids without the start token, cut at </s>."""
    model, mt = hf
    out = []
    for i in range(0, len(lines), 50):
        batch = mt(lines[i:i + 50], return_tensors="pt", padding=True)
        with torch.no_grad():
            rows = model.generate(**batch, max_new_tokens=max(limits[i:i + 50]), forced_eos_token_id=None,
                                  **kwargs).tolist()
        for row in rows:
            row = row[1:]
            out.append(row[: row.index(0) + 1] if 0 in row else row)
    return out


def test_greedy_output_is_token_identical_to_generate(opus_mt_dir, hf, ours):
    _, back = marian_to_ours(opus_mt_dir)
    lines = multi30k_lines("test_2016_flickr", "de")[:200]
    results = ours.translate(lines, SearchOptions(beam_size=1))
    limits = [int(1.5 * (len(r.src_ids) + 1) + 10) for r in results]  # translate's default output limit
    ended = 0
    for r, theirs, limit in zip(results, generate_ids(hf, lines, limits, num_beams=1, do_sample=False), limits):
        mine = r.ids + ([EOS_ID] if len(r.ids) < limit else [])
        assert mine == [back[i] for i in theirs][: len(mine)]
        ended += len(r.ids) < limit
    assert ended >= len(lines) // 5  # sentences that end by themselves: the comparison covers </s>


def test_teacher_forced_log_probs_within_1e_4(opus_mt_dir, hf, ours):
    model, mt = hf
    order, _ = marian_to_ours(opus_mt_dir)
    src, tgt = multi30k_lines("test_2016_flickr", "de")[:20], multi30k_lines("test_2016_flickr", "en")[:20]
    for s, t in zip(src, tgt):
        batch = mt(s, text_target=t, return_tensors="pt")
        with torch.no_grad():
            theirs = torch.log_softmax(model(**batch).logits[0].double(), -1)  # (tgt_len, marian vocab)
        src_ids, out_ids = encode_batch(ours.toks.src, [s])[0], encode_batch(ours.toks.tgt, [t])[0] + [EOS_ID]
        mine = ours.teacher_force(src_ids, out_ids).log_probs  # (tgt_len, our vocab)
        classes = [o for o in range(len(order)) if o != 2]  # our <s> is not a class (its log p is -inf)
        assert torch.isinf(mine[:, 2]).all()
        torch.testing.assert_close(mine[:, classes], theirs[:, [order[o] for o in classes]], rtol=0, atol=1e-4)


def test_beam_search_equals_generate_with_the_same_normalisation(opus_mt_dir, hf, ours):
    _, back = marian_to_ours(opus_mt_dir)
    lines = multi30k_lines("test_2016_flickr", "de")[:100]
    results = ours.translate(lines, SearchOptions(beam_size=4, length_penalty=1.0, length_style="average"))
    limits = [int(1.5 * (len(r.src_ids) + 1) + 10) for r in results]
    theirs = generate_ids(hf, lines, limits, num_beams=4, length_penalty=1.0, early_stopping=True)
    same = sum(r.ids + [EOS_ID] == [back[i] for i in t] for r, t in zip(results, theirs))
    assert same >= 0.95 * len(lines)


def test_the_imported_run_searches_as_the_model_was_published(opus_mt_dir, imported_run, ours, tmp_path):
    """generation_config.json's beam and length normalisation become the run's search.json: translate
    without search flags searches as the test above compares with generate (beam 4, |Y|^1.0)."""
    published = json.loads((opus_mt_dir / "generation_config.json").read_text())
    assert published["num_beams"] == 4 and "length_penalty" not in published  # Hugging Face's default: 1.0
    assert ours.defaults == SearchOptions(beam_size=4, length_penalty=1.0, length_style="average")
    from transformer_cli.exporters import export

    exported = json.loads((export(imported_run, "hf", tmp_path / "hf") / "generation_config.json").read_text())
    assert (exported["num_beams"], exported.get("length_penalty", 1.0)) == (4, 1.0)  # and back


@pytest.mark.parametrize("settings, fields", [
    ({"num_beams": 6, "length_penalty": 0.6}, {"beam_size": 6, "length_penalty": 0.6}),
    ({"num_beams": 1}, {"beam_size": 1}),
    ({}, {}),  # not set: translate's defaults (Hugging Face's length penalty is 1.0 too)
    ({"num_beams": 500, "length_penalty": -2.0}, {}),  # not what translate can take: its defaults stand
    ({"num_beams": True, "length_penalty": "1"}, {}),
])
def test_published_search_settings_that_cannot_be_taken_are_left_out(tmp_path, settings, fields):
    from transformer_cli.importers.marian import search_of

    (tmp_path / "generation_config.json").write_text(json.dumps(settings))
    assert search_of({"num_beams": 9}, tmp_path) == {"length_style": "average", **fields}
    (tmp_path / "generation_config.json").unlink()
    assert search_of(settings, tmp_path) == {"length_style": "average", **fields}  # older: config.json's


def test_imported_run_is_an_ordinary_run(imported_run, opus_mt_dir):
    config = json.loads((imported_run / "config.json").read_text())
    assert config["model"]["activation"] == "swish" and config["model"]["output_bias"]
    manifest = json.loads((imported_run / "manifest.json").read_text())
    assert manifest["imported_from"] == str(opus_mt_dir.resolve())
    assert set(manifest["files_sha256"]) >= {"config.json", "model.safetensors", "source.spm", "vocab.json"}
    assert {"torch", "tokenizers", "sentencepiece"} <= set(manifest["versions"])


def test_hf_export_round_trip_gives_the_same_greedy_output(opus_mt_dir, imported_run, tmp_path, hf):
    from transformer_cli.exporters import export

    out = export(imported_run, "hf", tmp_path / "hf")
    model, mt = hf
    again, tok = transformers.MarianMTModel.from_pretrained(out).eval(), transformers.AutoTokenizer.from_pretrained(out)
    lines = multi30k_lines("test_2016_flickr", "de")[:40]
    with torch.no_grad():
        a = model.generate(**mt(lines, return_tensors="pt", padding=True), num_beams=1, max_new_tokens=60,
                           forced_eos_token_id=None)
        b = again.generate(**tok(lines, return_tensors="pt", padding=True), num_beams=1, max_new_tokens=60)
    assert mt.batch_decode(a, skip_special_tokens=True) == tok.batch_decode(b, skip_special_tokens=True)


def test_separate_vocabularies_and_language_codes(tmp_path):
    source = build_opus_mt(tmp_path / "multi", separate_vocabs=True, language_codes=(">>en<<", ">>fr<<"),
                           train_steps=20, lines=1000, vocab=300)
    done = import_marian(source, tmp_path / "run")
    assert not done.model_config.share_embeddings and sorted(done.language_codes) == [">>en<<", ">>fr<<"]
    translator = load_run(done.run_dir)
    mt = transformers.MarianTokenizer.from_pretrained(source)
    _, back_src = marian_to_ours(source, "vocab.json")
    _, back_tgt = marian_to_ours(source, "target_vocab.json")
    lines = [(">>fr<< " if i % 2 else ">>en<<") + line for i, line in
             enumerate(multi30k_lines("test_2016_flickr", "de")[:200])]
    for line, w, g in zip(lines, mt(lines)["input_ids"], encode_batch(translator.toks.src, lines)):
        assert [back_src[i] for i in w] == g + [EOS_ID]
    targets = multi30k_lines("test_2016_flickr", "en")[:200]
    for line, w, g in zip(targets, mt(text_target=targets)["input_ids"], encode_batch(translator.toks.tgt, targets)):
        assert [back_tgt[i] for i in w] == g + [EOS_ID]
    model = transformers.MarianMTModel.from_pretrained(source).eval()
    results = translator.translate(lines[:30], SearchOptions(beam_size=1, max_len_a=0, max_len_b=12))
    with torch.no_grad():
        out = model.generate(**mt(lines[:30], return_tensors="pt", padding=True), num_beams=1, max_new_tokens=12,
                             forced_eos_token_id=None).tolist()
    for r, row in zip(results, out):
        row = row[1:]
        row = row[: row.index(0) + 1] if 0 in row else row
        assert (r.ids + [EOS_ID])[: len(row)] == [back_tgt[i] for i in row][: len(r.ids) + 1]


def copy_of(opus_mt_dir, tmp_path):
    return shutil.copytree(opus_mt_dir, tmp_path / "copy")


def edit_json(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


REFUSALS = {
    "bart": (lambda d: edit_json(d / "config.json", model_type="bart"), "a bart model"),
    "decoder-only": (lambda d: edit_json(d / "config.json", model_type="gpt2"), "not Marian"),
    "pickle only": (lambda d: (d / "model.safetensors").rename(d / "pytorch_model.bin"), "pytorch_model.bin"),
    "no weights": (lambda d: (d / "model.safetensors").unlink(), "no model.safetensors"),
    "corrupt weights": (lambda d: (d / "model.safetensors").write_bytes(b"\x00" * 64), "not a readable safetensors"),
    "corrupt spm": (lambda d: (d / "source.spm").write_bytes(b"not a model"), "not a SentencePiece model"),
    "missing spm": (lambda d: (d / "target.spm").unlink(), "target.spm: SentencePiece model not found"),
    "vocab vs rows": (lambda d: edit_json(d / "vocab.json", **{"▁extra▁token": 10_000}), "vocab.json: not a vocabulary"),
    "vocab too big": (lambda d: edit_json(d / "vocab.json", **{"▁extra": len(json.loads((d / "vocab.json").read_text()))}),
                      "the vocabulary has"),
    "pre-norm": (lambda d: edit_json(d / "config.json", normalize_before=True), "normalize_before"),
    "shapes": (lambda d: edit_json(d / "config.json", encoder_ffn_dim=48, decoder_ffn_dim=48), "config.json says"),
    "activation": (lambda d: edit_json(d / "config.json", activation_function="tanh"), "activation_function"),
    "no scaling": (lambda d: edit_json(d / "config.json", scale_embedding=False), "scale_embedding"),
    "bad json": (lambda d: (d / "config.json").write_text("{"), "not valid JSON"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_refusals_are_one_error_and_write_nothing(opus_mt_dir, tmp_path, case):
    source = copy_of(opus_mt_dir, tmp_path)
    damage, words = REFUSALS[case]
    damage(source)
    with pytest.raises(RunError) as e:
        import_marian(source, tmp_path / "out")
    assert words in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "out").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["copy"]
