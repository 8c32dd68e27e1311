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
