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
