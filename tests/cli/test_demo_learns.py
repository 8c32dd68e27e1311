"""The quick start's promise: `train --preset tiny` learns the demo corpus in a couple of minutes."""

import pytest
import sacrebleu


@pytest.mark.slow
def test_tiny_preset_learns_the_demo_corpus(cli, tmp_path):
    data, run = tmp_path / "data", tmp_path / "run"
    assert cli("prepare", "--dataset", "demo", "--out", data, "--vocab-size", "1000").exit_code == 0
    result = cli("train", "--data", data, "--out", run, "--preset", "tiny")
    assert result.exit_code == 0, result.output
    import datasets

    test = datasets.load_from_disk(str(data / "dataset"))["test"]
    sources = ["I am a student."] + list(test["src"][:200])
    out = cli("translate", "--model", run, input="\n".join(sources) + "\n")
    assert out.exit_code == 0, out.stderr
    hyps = out.stdout.splitlines()
    assert hyps[0] == "나는 학생이다."
    assert sacrebleu.corpus_bleu(hyps[1:], [list(test["tgt"][:200])]).score >= 90
