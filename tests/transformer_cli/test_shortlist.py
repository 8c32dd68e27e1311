"""The vocabulary shortlist: counting (data/shortlist.py), decoding over it (transformer/shortlist.py),
the run's file (transformer_cli/shortlist.py) and the commands (shortlist, translate --shortlist)."""

import gzip
import json
import shutil
from collections import Counter

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import data.shortlist as counting
from cli.main import app
from data.shortlist import dice_candidates, most_frequent
from tests_shared import assert_one_line_error
from transformer.shortlist import Shortlist, Shortlisted
from transformer_cli import SearchOptions, load_run
from transformer_cli.errors import RunError
from transformer_cli.shortlist import SHORTLIST_FILE, make_shortlist

SENTENCES = ["A man is riding a bike.", "Two dogs play in the snow.", "A woman reads a book in the park.",
             "Children are running on the beach.", "A dog is running."]


def brute_force_dice(pairs, k):
    c_s, c_t, c_st = Counter(), Counter(), Counter()
    for s, t in pairs:
        s, t = set(s), set(t)
        c_s.update(s)
        c_t.update(t)
        c_st.update((a, b) for a in s for b in t)
    best = {}
    for (a, b), n in c_st.items():
        best.setdefault(a, []).append((-2 * n / (c_s[a] + c_t[b]), b))
    return {a: [b for _, b in sorted(v)[:k]] for a, v in best.items()}, c_t


def test_dice_candidates_match_the_definition_across_chunks(monkeypatch):
    monkeypatch.setattr(counting, "CHUNK", 3)  # several merges of partial counts
    rng = np.random.default_rng(0)
    pairs = [(rng.integers(0, 12, rng.integers(1, 6)), rng.integers(0, 9, rng.integers(1, 6))) for _ in range(40)]
    got = dice_candidates(iter(pairs), 12, 9, k=3)
    want, c_t = brute_force_dice(pairs, 3)
    assert got.pairs == 40 and got.target_counts.tolist() == [c_t[t] for t in range(9)]
    for s in range(12):
        assert got.targets[got.offsets[s]:got.offsets[s + 1]].tolist() == want.get(s, [])


def test_most_frequent_breaks_ties_by_id():
    assert most_frequent(np.array([5, 1, 5, 0, 9]), 3).tolist() == [0, 2, 4]
    assert most_frequent(np.array([1, 2]), 10).tolist() == [0, 1]


def test_a_batchs_ids_are_the_union_of_its_words_candidates():
    table = Shortlist(torch.tensor([0, 2, 2, 5, 6]), torch.tensor([9, 4, 7, 4, 8, 3]), torch.tensor([0, 1]))
    src = torch.tensor([[0, 2, 2], [3, 1, 0]])  # words 0, 1, 2, 3: {9, 4}, {}, {7, 4, 8}, {3}
    assert table.ids(src).tolist() == [0, 1, 3, 4, 7, 8, 9]
    assert table.ids(torch.tensor([[1]])).tolist() == [0, 1]


def test_the_whole_vocabulary_as_a_shortlist_decodes_as_the_model(tiny_model):
    src = torch.randint(4, 23, (3, 6))
    every = Shortlisted(tiny_model, torch.arange(tiny_model.config.tgt_vocab_size))
    tgt = torch.randint(0, 19, (3, 4))
    want, _, _ = tiny_model.decode(tgt, tiny_model.encode(src)[0])
    got, _, _ = every.decode(tgt, every.encode(src)[0])
    torch.testing.assert_close(got, want)
    some = Shortlisted(tiny_model, torch.tensor([0, 2, 3, 5, 11]))
    logits, _, _ = some.decode(torch.tensor([[2, 4]]), some.encode(src[:1])[0])  # positions: ids 3 and 11
    full, _, _ = tiny_model.decode(torch.tensor([[3, 11]]), tiny_model.encode(src[:1])[0])
    torch.testing.assert_close(logits, full[..., [0, 2, 3, 5, 11]])
    assert some.position(11) == 4 and some.tokens([4, 0]) == [11, 0]
    with pytest.raises(ValueError, match="not in the shortlist"):
        some.position(4)


@pytest.fixture
def run(model_dir, tmp_path):
    """The session's demo run (English -> Korean), copied so a shortlist can be written into it."""
    return shutil.copytree(model_dir, tmp_path / "run")


def parallel_files(tmp_path, demo_data, n=400):
    """The first n training pairs of the demo corpus as text files (decoded from the prepared ids)."""
    import datasets

    from data.tokenizer import Tokenizers, decode

    toks = Tokenizers.load(demo_data)
    split = datasets.load_from_disk(str(demo_data / "dataset"))["train"].select(range(n))
    src, tgt = tmp_path / "train.en", tmp_path / "train.ko.gz"
    src.write_text("".join(decode(toks.src, ids) + "\n" for ids in split["src_ids"]))
    with gzip.open(tgt, "wt", encoding="utf-8") as f:
        f.writelines(decode(toks.tgt, ids) + "\n" for ids in split["tgt_ids"])
    return src, tgt


def test_translations_over_the_shortlist_use_only_its_tokens_and_full_lists_change_nothing(run, demo_data):
    plain = load_run(run)
    report = make_shortlist(run, data=demo_data, k=8, frequent=10)
    assert report.pairs > 1000 and (run / SHORTLIST_FILE).is_file()
    short = load_run(run, shortlist=True)
    rows = short.encode(SENTENCES).ids
    vocab = short.model.config.tgt_vocab_size
    allowed = set(short.shortlist.ids(short.tensor(rows)).tolist())
    assert len(allowed) < vocab / 2
    for options in (SearchOptions(beam_size=4, n_best=2), SearchOptions(beam_size=1)):
        for nbest in short.search(rows, options):
            assert all(set(h.tokens) <= allowed for h in nbest)
    # a shortlist holding every target token is the model itself
    short.shortlist = Shortlist(short.shortlist.offsets, short.shortlist.targets, torch.arange(vocab))
    for options in (SearchOptions(beam_size=4, n_best=3), SearchOptions(beam_size=1)):
        assert short.search(rows, options) == plain.search(rows, options)


def test_an_imported_marian_model_takes_a_shortlist_from_text(imported_run, shared_data, tmp_path):
    """An OPUS-MT import has no prepared data: its shortlist is counted from parallel text files
    (its SentencePiece vocabulary, its output bias)."""
    run = shutil.copytree(imported_run, tmp_path / "imported")
    multi30k = shared_data / "multi30k"
    report = make_shortlist(run, src_file=multi30k / "val.de.gz", tgt_file=multi30k / "val.en.gz")
    assert report.pairs == 1014
    short = load_run(run, shortlist=True)
    texts = ["Ein Mann fährt Fahrrad.", "Zwei Hunde spielen im Schnee."]
    rows = short.encode(texts).ids
    allowed = set(short.shortlist.ids(short.tensor(rows)).tolist())
    assert len(allowed) < short.model.config.tgt_vocab_size
    for t in short.translate(texts, SearchOptions(beam_size=3)):
        assert t.text and set(t.ids) <= allowed


def test_a_prefix_outside_the_shortlist_is_still_forced(run, demo_data):
    make_shortlist(run, data=demo_data, k=2, frequent=0)
    short = load_run(run, shortlist=True)
    rows = short.encode(SENTENCES[:2]).ids
    allowed = set(short.shortlist.ids(short.tensor(rows)).tolist())
    outside = [i for i in range(5, short.model.config.tgt_vocab_size) if i not in allowed][:2]
    hyps = short.search(rows, SearchOptions(beam_size=3), prefixes=[outside, []])
    assert hyps[0][0].tokens[:2] == outside


def test_shortlist_from_text_files_equals_the_prepared_one(run, demo_data, tmp_path):
    src, tgt = parallel_files(tmp_path, demo_data)
    from_text = make_shortlist(run, src_file=src, tgt_file=tgt, k=5, frequent=20)
    text_table = load_run(run, shortlist=True).shortlist
    assert from_text.pairs == 400
    assert text_table.offsets[-1] == from_text.candidates and set(range(4)) <= set(text_table.always.tolist())


@pytest.mark.parametrize("kwargs, words", [
    ({"k": 0}, "k must be between 1"), ({"frequent": -1}, "frequent must be between 0"),
    ({}, "give either data"), ({"src_file": "x"}, "give either data"),
])
def test_make_shortlist_refuses_bad_arguments(run, kwargs, words):
    with pytest.raises(RunError, match=words):
        make_shortlist(run, **kwargs)


def test_make_shortlist_refuses_mismatched_files_and_another_tokenizer(run, demo_data, tmp_path):
    src, tgt = tmp_path / "a.txt", tmp_path / "b.txt"
    src.write_text("one\ntwo\nthree\n")
    tgt.write_text("eins\nzwei\n")
    with pytest.raises(RunError, match="different numbers of lines .*b.txt ends after line 2"):
        make_shortlist(run, src_file=src, tgt_file=tgt)
    other = shutil.copytree(demo_data, tmp_path / "other")
    tokenizer = json.loads((other / "tokenizer.json").read_text())
    tokenizer["model"]["dropout"] = 0.5  # another tokenizer model: another fingerprint
    (other / "tokenizer.json").write_text(json.dumps(tokenizer))
    with pytest.raises(RunError, match="its tokenizer is not the model's"):
        make_shortlist(run, data=other)
    with pytest.raises(RunError, match="directory not found"):
        make_shortlist(run, data=tmp_path / "nowhere")
    assert not (run / SHORTLIST_FILE).exists()


def test_loading_a_missing_foreign_or_damaged_shortlist_is_one_error(run, demo_data, model_dir, tmp_path):
    with pytest.raises(RunError, match="no shortlist.safetensors; make one with 'transformer-cli shortlist"):
        load_run(run, shortlist=True)
    (run / SHORTLIST_FILE).write_bytes(b"\x00garbage")
    with pytest.raises(RunError, match="not a readable safetensors file"):
        load_run(run, shortlist=True)
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    make_shortlist(run, data=demo_data)
    tensors = load_file(str(run / SHORTLIST_FILE))
    with safe_open(str(run / SHORTLIST_FILE), "pt") as f:
        meta = f.metadata()
    save_file({**tensors, "targets": tensors["targets"] + 10**6}, str(run / SHORTLIST_FILE), metadata=meta)
    with pytest.raises(RunError, match="damaged shortlist .*targets outside the target vocabulary"):
        load_run(run, shortlist=True)
    save_file(tensors, str(run / SHORTLIST_FILE), metadata={**meta, "tokenizer_fingerprint": "0" * 16})
    with pytest.raises(RunError, match="made for another tokenizer"):
        load_run(run, shortlist=True)


def test_shortlist_and_translate_commands(run, demo_data, tmp_path):
    cli = CliRunner()
    made = cli.invoke(app, ["shortlist", "--model", str(run), "--data", str(demo_data), "--k", "10"])
    assert made.exit_code == 0, made.output
    assert "10 target tokens per source token" in made.stdout and "shortlist.safetensors" in made.stdout
    text = "\n".join(SENTENCES) + "\n"
    out = cli.invoke(app, ["translate", "--model", str(run), "--shortlist", "--threads", "1"], input=text)
    assert out.exit_code == 0, out.output
    assert len(out.stdout.splitlines()) == len(SENTENCES)
    for flags, words in ((["--model", str(run), "--sampling-topk", "5", "--beam-size", "1"], "sampling draws"),
                         (["--model", str(run), "--model", str(run)], "--shortlist takes one model")):
        refused = cli.invoke(app, ["translate", *flags, "--shortlist"], input=text)
        assert_one_line_error(refused, words)
    bare = shutil.copytree(run, tmp_path / "bare")
    (bare / SHORTLIST_FILE).unlink()
    assert_one_line_error(cli.invoke(app, ["translate", "--model", str(bare), "--shortlist"], input=text),
                          "no shortlist.safetensors")
    assert_one_line_error(cli.invoke(app, ["shortlist", "--model", str(run), "--k", "0", "--data", str(demo_data)]),
                          "--k must be between 1")
