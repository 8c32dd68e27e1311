import pytest
from typer.testing import CliRunner

from cli.main import app


class Run:
    def __init__(self) -> None:
        self.runner = CliRunner()

    def __call__(self, *args: str, input: str | None = None):
        return self.runner.invoke(app, [str(a) for a in args], input=input)


@pytest.fixture
def cli() -> Run:
    return Run()


@pytest.fixture(scope="session")
def model_dir(demo_data, tmp_path_factory):
    from typer.testing import CliRunner

    from cli.main import app

    run = tmp_path_factory.mktemp("model") / "run"
    result = CliRunner().invoke(app, ["train", "--data", str(demo_data), "--out", str(run), "--preset", "tiny",
                                      "--d-model", "32", "--heads", "2", "--d-ff", "64", "--layers", "1",
                                      "--max-steps", "30", "--eval-every", "30", "--eval-samples", "4",
                                      "--threads", "1", "--max-len", "40"])
    assert result.exit_code == 0, result.output
    return run
