import json

from tests_shared import assert_one_line_error


def test_prepare_demo_prints_summary(cli, tmp_path):
    out = tmp_path / "demo"
    result = cli("prepare", "--dataset", "demo", "--out", out, "--vocab-size", "500")
    assert result.exit_code == 0, result.output
    assert "prepared en → ko" in result.stdout and "dropped: too long" in result.stdout
    manifest = json.loads((out / "prepare.json").read_text())
    assert manifest["src_lang"] == "en" and manifest["tgt_lang"] == "ko"


def test_prepare_errors_are_one_line(cli, tmp_path, shared_data):
    assert_one_line_error(cli("prepare", "--dataset", tmp_path / "missing", "--src", "de", "--tgt", "en",
                              "--out", tmp_path / "o"), "no such file")
    assert_one_line_error(cli("prepare", "--dataset", shared_data / "multi30k", "--src", "de",
                              "--tgt", "xx", "--out", tmp_path / "o"), "unknown language code 'xx'")
    assert_one_line_error(cli("prepare", "--dataset", shared_data / "multi30k", "--out", tmp_path / "o"),
                          "--src and --tgt are required")
    assert_one_line_error(cli("prepare", "--dataset", "demo", "--vocab-size", "2", "--out", tmp_path / "o"),
                          "too small")
    assert not (tmp_path / "o").exists()
