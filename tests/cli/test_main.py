import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


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

    monkeypatch.setattr(m, "register", lambda names=None: boom)
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


def test_a_command_imports_only_its_own_module():
    """Start-up: `translate` registers (and imports) its own command module only, not those of
    prepare, train, serve...; `--help` still lists every command."""
    code = ("import sys\nfrom cli import main as m\nsys.argv = ['transformer-cli', 'translate', '--help']\n"
            "try:\n    m.main()\nexcept SystemExit:\n    pass\n"
            "print('MODULES', sorted(k for k in sys.modules if k.startswith('cli.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120).stdout
    modules = out.split("MODULES", 1)[1]
    assert "'cli.translate'" in modules
    for other in ("prepare", "train", "serve", "explain", "export", "import_model", "shortlist"):
        assert f"'cli.{other}'" not in modules, other
    assert "Usage: transformer-cli translate" in out
