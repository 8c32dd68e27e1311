"""What the reader finds is what runs, and every function fits on a screen."""

import ast
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
MAX_BODY_LINES = 50


def body_lines(fn: ast.FunctionDef) -> int:
    """Lines of a function's body, not counting the signatures of functions defined inside it (a
    Typer command's option list is a signature, not logic)."""
    lines = fn.end_lineno - fn.body[0].lineno + 1
    for node in ast.walk(fn):
        if node is not fn and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            lines -= node.body[0].lineno - start
    return lines


@pytest.mark.parametrize("package", ["cli", "transformer", "data", "transformer_cli"])
def test_no_function_body_over_50_lines(package):
    long = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and body_lines(node) > MAX_BODY_LINES:
                long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({body_lines(node)} lines)")
    assert long == []


def test_the_model_masks_with_causal_mask(monkeypatch):
    """The decoder's triangle comes from masks.causal_mask (the explicit path a reader follows)."""
    import transformer.attention as attention
    from transformer import ModelConfig, Transformer
    from transformer.masks import causal_mask

    calls = []

    def spy(q_len, k_len=None, device=None):
        calls.append((q_len, k_len))
        return causal_mask(q_len, k_len, device)

    monkeypatch.setattr(attention, "causal_mask", spy)
    model = Transformer(ModelConfig(src_vocab_size=20, tgt_vocab_size=20, d_model=16, n_heads=2, d_ff=32,
                                    n_encoder_layers=1, n_decoder_layers=2, max_len=32)).eval()
    model(torch.tensor([[5, 6, 7]]), torch.tensor([[2, 8, 9, 10]]), return_attention=True)
    assert calls == [(4, 4), (4, 4)]


def test_causal_mask_with_a_cache_lets_the_last_query_see_every_key():
    from transformer.masks import causal_mask

    assert causal_mask(3).squeeze().tolist() == [[True, False, False], [True, True, False], [True, True, True]]
    assert causal_mask(2, 4).squeeze().tolist() == [[True, True, True, False], [True, True, True, True]]
