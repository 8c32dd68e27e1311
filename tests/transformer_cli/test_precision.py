"""bf16 translation against fp32 on a small trained model: mostly the same outputs, the same BLEU
within a bound. (The exit code alone would pass a bf16 path that decodes garbage.)"""

import pytest
import torch

from transformer_cli import SearchOptions, TrainRequest, load_run, train

pytestmark = pytest.mark.slow  # a model learns the demo corpus first

SENTENCES = 120  # validation sentences translated per precision
SAME_SHARE = 0.8  # at least this share of outputs identical to fp32's (about 0.97 measured)
BLEU_GAP = 3.0  # bf16 BLEU within this of fp32's (about 0.5 measured)


@pytest.fixture(scope="module")
def trained(demo_data, tmp_path_factory):
    """A one-layer model trained until it translates the demo corpus (about 15 s on one thread)."""
    out = tmp_path_factory.mktemp("precision") / "run"
    train(TrainRequest(out=out, data=demo_data, preset="tiny",
                       model={"d_model": 32, "n_heads": 2, "d_ff": 64, "n_encoder_layers": 1, "n_decoder_layers": 1,
                              "max_len": 64},
                       training={"max_steps": 300, "eval_every": 300, "eval_samples": 8, "threads": 1,
                                 "max_tokens": 800, "warmup": 50}))
    return out


@pytest.fixture(scope="module")
def validation(demo_data):
    from datasets import load_from_disk

    split = load_from_disk(str(demo_data / "dataset" / "validation"))
    return list(split["src"][:SENTENCES]), list(split["tgt"][:SENTENCES])


@pytest.mark.parametrize("beam_size", [1, 5])
def test_bf16_translates_like_fp32(trained, validation, beam_size):
    from transformer_cli.scoring import score

    sources, references = validation
    outputs = {}
    for precision in ("fp32", "bf16"):
        translator = load_run(trained, precision=precision)
        dtype = {p.dtype for p in translator.model.parameters()}
        assert dtype == {torch.bfloat16 if precision == "bf16" else torch.float32}
        outputs[precision] = [r.text for r in translator.translate(sources, SearchOptions(beam_size=beam_size))]
    same = sum(a == b for a, b in zip(outputs["fp32"], outputs["bf16"])) / len(sources)
    scores = {p: score(hyps, references).bleu for p, hyps in outputs.items()}
    assert scores["fp32"] > 30, "the model learnt something, so the comparison means something"
    assert same >= SAME_SHARE, (same, scores)
    assert abs(scores["bf16"] - scores["fp32"]) <= BLEU_GAP, scores
