"""translate throughput against Hugging Face MarianMTModel.generate with the same weights, same run.

Our model's weights are copied into a MarianMTModel of identical dimensions (post-norm, ReLU, shared
embeddings, our sinusoidal table in place of Marian's), so both decode the same network on the same
batches (our length-sorted token batches). Prints source sentences/s and output tokens/s for greedy
and beam 5, the ratio ours/HF, how often the two outputs agree, and the start-up time of
`echo ... | transformer-cli translate` next to `python -c "import torch"`.

    python bench/bench_translate.py --model work/m30k-small [--sentences 1000] [--threads 2]
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
TEST_DE = REPO.parent / "shared" / "data" / "multi30k" / "test_2016_flickr.de.gz"


def marian_from(model) -> "torch.nn.Module":
    from transformers import MarianConfig, MarianMTModel

    c = model.config
    if not c.share_embeddings or c.norm != "post":
        raise SystemExit("the Marian comparison needs a joint-vocabulary, post-norm model")
    config = MarianConfig(
        vocab_size=c.src_vocab_size, decoder_vocab_size=c.tgt_vocab_size, d_model=c.d_model,
        encoder_layers=c.n_encoder_layers, decoder_layers=c.n_decoder_layers,
        encoder_attention_heads=c.n_heads, decoder_attention_heads=c.n_heads,
        encoder_ffn_dim=c.d_ff, decoder_ffn_dim=c.d_ff, activation_function="relu",
        max_position_embeddings=c.max_len, scale_embedding=True, share_encoder_decoder_embeddings=True,
        pad_token_id=0, eos_token_id=3, bos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=None,
        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, tie_word_embeddings=True)
    hf = MarianMTModel(config).eval()
    ours = model.state_dict()
    with torch.no_grad():
        m = hf.model
        m.shared.weight.copy_(ours["src_embed.weight"])
        for pos in (m.encoder.embed_positions, m.decoder.embed_positions):
            pos.weight.copy_(model.positions.pe[: pos.weight.size(0)])
        hf.lm_head.weight = m.shared.weight

        def attn(dst, prefix):
            for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
                getattr(dst, name).weight.copy_(ours[f"{prefix}.{name}.weight"])
                getattr(dst, name).bias.copy_(ours[f"{prefix}.{name}.bias"])

        def norm(dst, prefix):
            dst.weight.copy_(ours[f"{prefix}.norm.gamma"])
            dst.bias.copy_(ours[f"{prefix}.norm.beta"])

        def ffn(layer, prefix):
            for hf_name, our_name in (("fc1", "w_1"), ("fc2", "w_2")):
                getattr(layer, hf_name).weight.copy_(ours[f"{prefix}.feed_forward.{our_name}.weight"])
                getattr(layer, hf_name).bias.copy_(ours[f"{prefix}.feed_forward.{our_name}.bias"])

        for i, layer in enumerate(m.encoder.layers):
            p = f"encoder.layers.{i}"
            attn(layer.self_attn, f"{p}.self_attn")
            norm(layer.self_attn_layer_norm, f"{p}.attn_residual")
            ffn(layer, p)
            norm(layer.final_layer_norm, f"{p}.ff_residual")
        for i, layer in enumerate(m.decoder.layers):
            p = f"decoder.layers.{i}"
            attn(layer.self_attn, f"{p}.self_attn")
            norm(layer.self_attn_layer_norm, f"{p}.self_residual")
            attn(layer.encoder_attn, f"{p}.cross_attn")
            norm(layer.encoder_attn_layer_norm, f"{p}.cross_residual")
            ffn(layer, p)
            norm(layer.final_layer_norm, f"{p}.ff_residual")
    return hf


def hf_translate(hf, translator, ids, groups, beam, a, b, alpha) -> list[list[int]]:
    out: list[list[int]] = [[] for _ in ids]
    for group in groups:
        src = translator.tensor([ids[g] for g in group])
        mask = (src != 0).long()
        longest = int(mask.sum(1).max())
        with torch.inference_mode():
            gen = hf.generate(input_ids=src, attention_mask=mask, num_beams=beam, do_sample=False,
                              max_new_tokens=int(a * longest + b), length_penalty=alpha, early_stopping=True,
                              num_return_sequences=1)
        for g, row in zip(group, gen.tolist()):
            row = row[1:]  # drop the start token
            out[g] = row[: row.index(3)] if 3 in row else row
    return out


def startup(model_dir: Path, repeats: int = 3) -> tuple[float, float]:
    exe = Path(sys.executable).with_name("transformer-cli")
    def wall(cmd, stdin=None):
        t0 = time.perf_counter()
        subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=True)
        return time.perf_counter() - t0
    cli = [wall([str(exe), "translate", "--model", str(model_dir)], "Ein Mann fährt Fahrrad.\n")
           for _ in range(repeats)]
    torch_only = [wall([sys.executable, "-c", "import torch"]) for _ in range(repeats)]
    return statistics.median(cli), statistics.median(torch_only)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--sentences", type=int, default=1000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-tokens", type=int, default=4000)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from transformer_cli import SearchOptions, load_run

    translator = load_run(args.model)
    with gzip.open(TEST_DE, "rt", encoding="utf-8") as f:
        lines = [next(f).strip() for _ in range(args.sentences)]
    hf = marian_from(translator.model)
    ids = translator.encode(lines)
    groups = translator.batches(ids, args.batch_tokens)
    a, b, alpha = 1.5, 10, 0.6
    print(f"model {args.model}: d_model {translator.model.config.d_model}, "
          f"{translator.model.config.n_encoder_layers}+{translator.model.config.n_decoder_layers} layers, "
          f"vocab {translator.model.config.tgt_vocab_size}; {len(lines)} sentences of {TEST_DE.name}; "
          f"torch {torch.__version__}, {args.threads} threads, float32")
    for beam in (1, 5):
        translator.translate(lines[:16], SearchOptions(beam, 1, alpha, a, b, args.batch_tokens))  # warm-up
        hf_translate(hf, translator, ids[:16], translator.batches(ids[:16], args.batch_tokens), beam, a, b, alpha)
        t0 = time.perf_counter()
        ours = translator.translate(lines, SearchOptions(beam, 1, alpha, a, b, args.batch_tokens))
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        theirs = hf_translate(hf, translator, ids, groups, beam, a, b, alpha)
        t_hf = time.perf_counter() - t0
        tok_ours = sum(len(r.ids) + 1 for r in ours)
        tok_hf = sum(len(r) + 1 for r in theirs)
        agree = sum(r.ids == h for r, h in zip(ours, theirs)) / len(lines)
        name = "greedy" if beam == 1 else f"beam {beam}"
        print(f"{name:7s} ours {len(lines) / t_ours:7.1f} sent/s {tok_ours / t_ours:8.0f} tok/s | "
              f"HF Marian {len(lines) / t_hf:7.1f} sent/s {tok_hf / t_hf:8.0f} tok/s | "
              f"ratio (sent/s) {t_hf / t_ours:.2f} | identical outputs {agree:.1%}")
    cli, torch_only = startup(args.model)
    print(f"start-up: echo ... | transformer-cli translate {cli:.2f} s; python -c 'import torch' {torch_only:.2f} s")


if __name__ == "__main__":
    main()
