from pathlib import Path

import pytest
import torch

from transformer import ModelConfig, Transformer

from tests_shared import SHARED_DATA  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def tiny_config() -> ModelConfig:
    return ModelConfig(src_vocab_size=23, tgt_vocab_size=19, d_model=32, n_heads=4, d_ff=64,
                       n_encoder_layers=2, n_decoder_layers=2, dropout=0.0, max_len=64)


@pytest.fixture
def tiny_model(tiny_config) -> Transformer:
    return Transformer(tiny_config).eval()


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory):
    """The demo corpus prepared once per test session (small vocabulary)."""
    from data.prepare import PrepareOptions, prepare

    out = tmp_path_factory.mktemp("demo") / "prepared"
    prepare(PrepareOptions("demo", "en", "ko", vocab_size=600), out)
    return out


def _hypothesis_profile() -> None:
    """CI runs the same generated examples every time (derandomized), so a red CI is never a coin
    toss; a developer's run explores new ones."""
    import os

    from hypothesis import settings

    settings.register_profile("ci", derandomize=True)
    if os.environ.get("CI"):
        settings.load_profile("ci")


_hypothesis_profile()


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


@pytest.fixture(scope="session")
def opus_mt_dir(tmp_path_factory):
    """An OPUS-MT-layout MarianMTModel directory (de->en, joint vocabulary, swish), built offline."""
    from marian_fixture import build_opus_mt

    pytest.importorskip("transformers")
    pytest.importorskip("sentencepiece")
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return build_opus_mt(tmp_path_factory.mktemp("opus-mt") / "opus-mt-de-en", train_steps=200)


@pytest.fixture(scope="session")
def imported_run(opus_mt_dir, tmp_path_factory):
    """opus_mt_dir imported as a run directory."""
    from transformer_cli.importers import import_marian

    return import_marian(opus_mt_dir, tmp_path_factory.mktemp("imported") / "run").run_dir
