from pathlib import Path

import pytest
import torch

from transformer import ModelConfig, Transformer

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


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
