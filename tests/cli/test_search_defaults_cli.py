"""A run's search.json end to end: `train` chooses the length penalty on validation and writes it,
`translate` and `serve` search with it unless told otherwise, a bad file is one line."""

import json
import shutil

import pytest

from tests_shared import TINY_RUN, assert_one_line_error
from transformer_cli.search_defaults import LENGTH_PENALTIES, SEARCH_FILE
from transformer_cli.translator import SearchOptions, load_run

TEXT = "I am a student.\nThey buy tea often.\nWe went home.\n"


@pytest.fixture
def run_copy(model_dir, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(model_dir, out, ignore=shutil.ignore_patterns("checkpoints"))
    return out


def records(result) -> list[dict]:
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_train_chooses_the_length_penalty_on_validation_and_translate_uses_it(cli, demo_data, tmp_path):
    run = tmp_path / "run"
    result = cli("train", "--data", demo_data, "--out", run, *TINY_RUN, "--max-steps", "6", "--eval-every", "3",
                 "--choose-length-penalty")
    assert result.exit_code == 0, result.output
    assert "choosing the length penalty" in result.stdout and "length penalty" in result.stdout.split("finished")[1]
    document = json.loads((run / SEARCH_FILE).read_text())
    bleu = {float(a): b for a, b in document["chosen"]["bleu"].items()}
    assert sorted(bleu) == sorted(LENGTH_PENALTIES) and document["chosen"]["beam_size"] == 5
    assert document["chosen"]["on"] == "8 validation sentences"  # the sample validation translates (TINY_RUN)
    assert bleu[document["length_penalty"]] == max(bleu.values()) and document["length_style"] == "gnmt"
    assert load_run(run).defaults == SearchOptions(length_penalty=document["length_penalty"])


def test_train_without_the_choice_writes_no_file(cli, demo_data, tmp_path):
    run = tmp_path / "run"
    result = cli("train", "--data", demo_data, "--out", run, *TINY_RUN, "--max-steps", "3", "--eval-every", "3")
    assert result.exit_code == 0, result.output
    assert not (run / SEARCH_FILE).exists() and "choosing" not in result.stdout


def test_an_interrupted_choice_leaves_no_file(run_copy):
    """A stop request during the choice: no choice, and the file of an earlier model is gone too."""
    from transformer_cli.training import choose_search

    (run_copy / SEARCH_FILE).write_text('{"length_penalty": 2.2}')
    events = []
    assert choose_search(run_copy, "cpu", ["I am a student."], ["x"], events.append, lambda: True) is None
    assert not (run_copy / SEARCH_FILE).exists() and events[0]["event"] == "choosing"


def test_presets_choose_it_where_the_recipe_is_scored():
    from transformer_cli.train_config import resolve

    assert resolve("small", None, {}, {}, 8000, 8000, True)[1].choose_length_penalty
    assert not resolve("tiny", None, {}, {}, 600, 600, True)[1].choose_length_penalty  # demos, tests: quick
    assert not resolve("small", None, {}, {"choose_length_penalty": False}, 8000, 8000, True)[1].choose_length_penalty


def test_translate_searches_with_the_file_unless_a_flag_says_otherwise(cli, run_copy):
    """Length penalty 0 makes a hypothesis' score its log-probability: the file's value is in use
    exactly when every score is the sum of its tokens' log-probabilities."""
    (run_copy / SEARCH_FILE).write_text('{"beam_size": 1, "length_penalty": 0.0}')
    own = records(cli("translate", "--model", run_copy, "--format", "jsonl", input=TEXT))
    assert all(r["score"] == pytest.approx(sum(r["token_logprobs"]), abs=1e-4) for r in own)
    greedy = records(cli("translate", "--model", run_copy, "-b", "1", "--length-penalty", "0", "--format", "jsonl",
                         input=TEXT))
    assert [r["translation"] for r in own] == [r["translation"] for r in greedy]
    typed = records(cli("translate", "--model", run_copy, "--length-penalty", "1", "--format", "jsonl", input=TEXT))
    assert all(r["score"] > sum(r["token_logprobs"]) + 1e-3 for r in typed)  # log P / lp, lp > 1
    wide = records(cli("translate", "--model", run_copy, "-b", "3", "--n-best", "3", "--format", "jsonl",
                       input=TEXT))
    assert all(len(r["nbest"]) == 3 for r in wide)  # --beam-size overrides the file's 1


def test_a_bad_file_is_one_line_before_anything_is_read(cli, run_copy):
    (run_copy / SEARCH_FILE).write_text('{"length_penalty": -1}')
    result = cli("translate", "--model", run_copy, input=TEXT)
    assert_one_line_error(result, "search.json: length_penalty must be between 0 and 10")
    assert_one_line_error(cli("serve", "--model", run_copy, "--port", "0"), "search.json: length_penalty must be")
    (run_copy / SEARCH_FILE).write_text('{"beam_size": 4}')  # with sampling it needs --beam-size 1
    result = cli("translate", "--model", run_copy, "--sampling-topk", "5", input=TEXT)
    assert_one_line_error(result, "use --beam-size 1 (got 4)")


def test_serve_takes_the_file_as_the_default_of_a_request(model_dir, run_copy):
    from service_helpers import LiveServer
    from transformer_cli.service.api import RequestLimits
    from transformer_cli.service.server import ServeOptions, default_search

    (run_copy / SEARCH_FILE).write_text('{"beam_size": 8, "length_penalty": 0.0}')
    limits = RequestLimits(max_beam=4)
    search = default_search(ServeOptions(run_copy, limits=limits, max_len_b=20), [run_copy])
    assert (search.beam_size, search.length_penalty, search.max_len_b) == (4, 0.0, 20)  # no wider than max_beam
    from transformer_cli.service.app import AppSettings

    translator = load_run(run_copy)
    lines = TEXT.splitlines()
    with LiveServer(lambda: translator, settings=AppSettings(limits, search, "run")) as server:
        got = server.post("/v1/translate", {"text": lines, "scores": True}).json()["translations"]
        want = translator.translate(lines, SearchOptions(beam_size=4, length_penalty=0.0, max_len_b=20))
        assert [g["text"] for g in got] == [w.text for w in want]
        assert [g["score"] for g in got] == pytest.approx([w.score for w in want], abs=1e-4)
        typed = server.post("/v1/translate", {"text": lines, "scores": True, "length_penalty": 1.0,
                                              "beam_size": 2}).json()["translations"]
        want = translator.translate(lines, SearchOptions(beam_size=2, length_penalty=1.0, max_len_b=20))
        assert [g["score"] for g in typed] == pytest.approx([w.score for w in want], abs=1e-4)
        defaults = server.request("GET", "/v1/model").json()["defaults"]
        assert defaults == {"beam_size": 4, "length_penalty": 0.0, "length_style": "gnmt"}
