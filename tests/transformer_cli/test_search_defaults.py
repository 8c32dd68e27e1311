"""RUN/search.json: a run's own search settings, read and checked, used wherever a caller gives none,
overridden by whatever it gives; train's choice of the length penalty on validation."""

import json
import shutil

import pytest

from transformer_cli.errors import RunError
from transformer_cli.search_defaults import (SEARCH_FILE, agreed_search, choose_length_penalty, read_search,
                                             options_for, write_search)
from transformer_cli.translator import SearchOptions, load_ensemble, load_run

TEXTS = ["I am a student.", "They buy tea often.", "We went home.", "My father watches a play at the library."]


@pytest.fixture
def run_copy(model_dir, tmp_path):
    """A copy of the session's tiny run (without checkpoints), free to get a search.json."""
    out = tmp_path / "run"
    shutil.copytree(model_dir, out, ignore=shutil.ignore_patterns("checkpoints"))
    return out


def with_search(run, document) -> None:
    (run / SEARCH_FILE).write_text(document if isinstance(document, str) else json.dumps(document))


def test_a_run_without_the_file_has_the_library_defaults(run_copy):
    assert read_search(run_copy) == {}
    assert load_run(run_copy).defaults == SearchOptions()


def test_the_file_is_what_a_call_without_options_searches_with(run_copy):
    with_search(run_copy, {"beam_size": 1, "length_penalty": 1.8, "chosen": {"on": "by hand"}, "other": 3})
    assert read_search(run_copy) == {"beam_size": 1, "length_penalty": 1.8}  # other keys are left alone
    translator = load_run(run_copy)
    assert translator.defaults == SearchOptions(beam_size=1, length_penalty=1.8)
    got = translator.translate(TEXTS)
    want = translator.translate(TEXTS, SearchOptions(beam_size=1, length_penalty=1.8))
    assert [(t.text, t.score) for t in got] == [(t.text, t.score) for t in want]
    targets = [t.text for t in want]  # scoring given targets divides by the file's length penalty too
    by_file = [t.score for t in translator.score(TEXTS, targets)]
    assert by_file == [t.score for t in translator.score(TEXTS, targets, SearchOptions(length_penalty=1.8))]
    assert by_file != [t.score for t in translator.score(TEXTS, targets, SearchOptions(length_penalty=1.0))]


def test_given_fields_override_the_file_and_the_file_overrides_the_library(run_copy):
    with_search(run_copy, {"length_penalty": 1.4, "length_style": "average"})
    options = options_for([run_copy], n_best=2, beam_size=3)
    assert options == SearchOptions(beam_size=3, n_best=2, length_penalty=1.4, length_style="average")
    assert options_for([run_copy], length_penalty=0.6).length_penalty == 0.6
    base = SearchOptions(max_len_a=2.0, max_len_b=3, batch_tokens=500)
    assert options_for([run_copy], base) == SearchOptions(5, 1, 1.4, 2.0, 3, 500, length_style="average")


@pytest.mark.parametrize("document, words", [
    ("{bad", "is not valid JSON"),
    ("[1.4]", "must hold a JSON object"),
    ('{"length_penalty": "1.4"}', "length_penalty must be a number"),
    ('{"length_penalty": NaN}', "length_penalty must be a finite number"),
    ('{"length_penalty": 50}', "length_penalty must be between 0 and 10"),
    ('{"beam_size": true}', "beam_size must be an integer"),
    ('{"beam_size": 0}', "beam_size must be between 1"),
    ('{"length_style": "fairseq"}', "length_style must be gnmt or average"),
    ("[" * 100_000, "nested too deeply"),
])
def test_a_file_that_cannot_be_used_is_one_error_naming_it(run_copy, document, words):
    with_search(run_copy, document)
    for call in (read_search, load_run):
        with pytest.raises(RunError) as e:
            call(run_copy)
        assert str(run_copy / SEARCH_FILE) in str(e.value) and words in str(e.value)
        assert "\n" not in str(e.value)


def test_an_ensemble_takes_the_values_its_runs_agree_on(run_copy, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(run_copy, other)
    with_search(run_copy, {"beam_size": 3, "length_penalty": 1.4})
    with_search(other, {"beam_size": 3, "length_penalty": 0.6})
    assert agreed_search([run_copy, other]) == {"beam_size": 3}
    assert load_ensemble([run_copy, other]).defaults == SearchOptions(beam_size=3)
    (other / SEARCH_FILE).unlink()
    assert agreed_search([run_copy, other]) == {}


class ByAlpha:
    """A stand-in translator whose outputs are right only at one length penalty."""

    def __init__(self, refs, right_at):
        self.refs, self.right_at, self.calls = refs, right_at, []

    def translate(self, texts, options):
        self.calls.append(options)
        right = options.length_penalty in self.right_at
        return [type("T", (), {"text": r if right else "no"})() for r in self.refs]


def test_the_choice_is_the_best_bleu_and_the_first_of_a_tie():
    refs = ["a man rides a red bicycle down the street", "two dogs play in the white snow today"]
    fake = ByAlpha(refs, {1.4})
    choice = choose_length_penalty(fake, ["x", "y"], refs, (0.6, 1.0, 1.4, 1.8))
    assert choice.length_penalty == 1.4 and choice.bleu[1.4] == pytest.approx(100.0)
    assert set(choice.bleu) == {0.6, 1.0, 1.4, 1.8} and choice.sentences == 2
    assert {(o.beam_size, o.length_style) for o in fake.calls} == {(5, "gnmt")}
    tie = choose_length_penalty(ByAlpha(refs, {1.8, 1.0}), ["x", "y"], refs, (0.6, 1.0, 1.4, 1.8))
    assert tie.length_penalty == 1.0


def test_a_stop_request_ends_the_choice_without_one():
    refs = ["a b c d"]
    fake = ByAlpha(refs, {1.0})
    asked = iter([False, True])
    assert choose_length_penalty(fake, ["x"], refs, (0.6, 1.0, 1.4), should_stop=lambda: next(asked)) is None
    assert len(fake.calls) == 1


def test_the_choice_reads_the_sentences_validation_reads():
    """One sample for validation's BLEU and the length penalty's choice (and bench/stop_at.py):
    drawn once for a split size, sorted, distinct, the whole split when 0 or too many are asked."""
    from transformer_cli.run_dir import validation_sample

    rows = validation_sample(1014, 500)
    assert len(set(rows.tolist())) == 500 and list(rows) == sorted(rows) and 0 <= rows.min() and rows.max() < 1014
    assert (validation_sample(1014, 500) == rows).all()
    assert list(validation_sample(7, 0)) == list(range(7)) == list(validation_sample(7, 9))


def test_written_file_is_read_back(run_copy):
    write_search(run_copy, {"length_penalty": 1.8, "length_style": "gnmt", "n_best": 4},
                 {"on": "2 validation sentences", "bleu": {"1.8": 30.0}})
    document = json.loads((run_copy / SEARCH_FILE).read_text())
    assert document == {"length_penalty": 1.8, "length_style": "gnmt",
                        "chosen": {"on": "2 validation sentences", "bleu": {"1.8": 30.0}}}
    assert read_search(run_copy) == {"length_penalty": 1.8, "length_style": "gnmt"}


def test_explain_and_inspect_search_as_translate_does(run_copy):
    """explain's beam trace and inspect's own translation use the run's length penalty too."""
    from transformer_cli.explain import explain

    with_search(run_copy, {"length_penalty": 0.0})
    translator = load_run(run_copy)
    trace = explain(translator, TEXTS[3], beam_size=3).beam
    assert trace.alpha == 0.0
    assert [f.score for f in trace.finished] == sorted((f.score for f in trace.finished), reverse=True)
    want = translator.translate([TEXTS[3]], SearchOptions(beam_size=3, length_penalty=0.0))[0].text
    assert translator.inspect(TEXTS[3], beam_size=3).translation == want
