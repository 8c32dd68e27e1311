from importlib.metadata import version


def test_version(cli):
    result = cli("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"transformer-cli {version('transformer-cli')}"


def test_help_lists_commands(cli):
    result = cli("--help")
    assert result.exit_code == 0
    for command in ("prepare", "train", "translate", "inspect-attention"):
        assert command in result.stdout


def test_help_keeps_square_brackets(cli):
    """rich would read `[model]` in a help string as markup and drop it; the help escapes it."""
    result = cli("train", "--help")
    assert result.exit_code == 0
    assert "[model]" in result.stdout and "[training]" in result.stdout


def test_unexpected_errors_are_one_line(monkeypatch, capsys):
    import pytest

    import cli.main as m

    def boom(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(m, "app", boom)
    monkeypatch.delenv("TRANSFORMER_CLI_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        m.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error (RuntimeError: boom)" in err


def test_wrong_flags_are_one_line(monkeypatch, capsys):
    import pytest

    import cli.main as m

    for argv, words in ((["translate", "--model", "x", "--beam-size", "abc"], "--beam-size"),
                        (["inspect-attention", "--model", "x", "--no-such-flag", "hi"], "--no-such-flag"),
                        (["translate"], "Missing option '--model'"), (["nosuch"], "No such command")):
        monkeypatch.setattr("sys.argv", ["transformer-cli", *argv])
        with pytest.raises(SystemExit) as exit_info:
            m.main()
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and words in err, err
