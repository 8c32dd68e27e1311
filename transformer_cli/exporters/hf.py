"""Export to Hugging Face Transformers: a MarianMTModel directory (config, safetensors weights,
generation config with our special ids) and our tokenizer as a PreTrainedTokenizerFast.

Marian is our architecture (post-norm, the feed-forward activation and output bias as configured,
embeddings x sqrt(d_model), sinusoidal positions, one shared vocabulary tied to the output) except
for one layout detail: its sinusoidal table puts all
sines first and all cosines second, ours interleaves them (sin, cos, sin, cos, ...). Marian does not
store that table; it recomputes it. So the exported weights express our model in a permuted basis of
the d_model dimensions: dimension 2i becomes i and 2i+1 becomes d_model/2 + i, in every embedding,
every matrix that reads or writes the residual stream, and every LayerNorm. Layer norm and the
residual sums do not care about the order of dimensions, so the network computes the same function."""

from __future__ import annotations

from pathlib import Path

import torch

from data.tokenizer import BOS_ID, EOS_ID, PAD_ID, SPECIALS, UNK_ID
from transformer_cli.errors import RunError
from transformer_cli.exporters.common import finish, need

# our per-layer names -> Marian's (attention projections keep their names)
ENCODER = {"self_attn": "self_attn", "attn_residual": "self_attn_layer_norm", "ff_residual": "final_layer_norm"}
DECODER = {"self_attn": "self_attn", "cross_attn": "encoder_attn", "self_residual": "self_attn_layer_norm",
           "cross_residual": "encoder_attn_layer_norm", "ff_residual": "final_layer_norm"}


def refuse_unless_marian_like(config, what: str) -> None:
    """Marian knows post-norm and one shared vocabulary only."""
    if config.norm != "post":
        raise RunError(f"{what} has no pre-norm Marian model: this run is --norm pre (export it to ctranslate2 or onnx)")
    if not config.share_embeddings:
        raise RunError(f"{what} export needs one joint vocabulary; this run has separate source and target "
                       "vocabularies (export it to ctranslate2 or onnx)")


def interleaved_to_halves(d_model: int) -> torch.Tensor:
    """Index p with marian_vector = our_vector[p]: (0, 2, 4, ..., 1, 3, 5, ...)."""
    return torch.cat([torch.arange(0, d_model, 2), torch.arange(1, d_model, 2)])


def marian_config(c):
    """The MarianConfig of our ModelConfig `c` (one shared vocabulary; special ids as ours)."""
    transformers = need("transformers", "Hugging Face Transformers")
    return transformers.MarianConfig(
        vocab_size=c.src_vocab_size, decoder_vocab_size=c.tgt_vocab_size, d_model=c.d_model,
        encoder_layers=c.n_encoder_layers, decoder_layers=c.n_decoder_layers,
        encoder_attention_heads=c.n_heads, decoder_attention_heads=c.n_heads,
        encoder_ffn_dim=c.d_ff, decoder_ffn_dim=c.d_ff, activation_function=c.activation,
        max_position_embeddings=c.max_len, scale_embedding=True, share_encoder_decoder_embeddings=True,
        tie_word_embeddings=c.tie_output, pad_token_id=PAD_ID, eos_token_id=EOS_ID, bos_token_id=BOS_ID,
        decoder_start_token_id=BOS_ID, forced_eos_token_id=None, dropout=c.dropout,
        attention_dropout=c.attention_dropout, activation_dropout=0.0)


def layer_names(n_encoder_layers: int, n_decoder_layers: int) -> list[tuple[str, str, str]]:
    """(our name, Marian's name, axis) of every per-layer tensor. axis: "in" for a matrix that reads
    the residual stream (its columns are d_model dimensions), "out" for one that writes it (rows, and
    its bias) and the LayerNorms, "" for what has no d_model axis. The one name map of the export and
    of import (transformer_cli.importers.marian)."""
    names = []
    for side, layers, n in (("encoder", ENCODER, n_encoder_layers), ("decoder", DECODER, n_decoder_layers)):
        for i in range(n):
            ours, theirs = f"{side}.layers.{i}", f"model.{side}.layers.{i}"
            for our, their in layers.items():
                if our.endswith("attn"):
                    for proj in ("q_proj", "k_proj", "v_proj"):
                        names += [(f"{ours}.{our}.{proj}.weight", f"{theirs}.{their}.{proj}.weight", "in"),
                                  (f"{ours}.{our}.{proj}.bias", f"{theirs}.{their}.{proj}.bias", "")]
                    names += [(f"{ours}.{our}.out_proj.weight", f"{theirs}.{their}.out_proj.weight", "out"),
                              (f"{ours}.{our}.out_proj.bias", f"{theirs}.{their}.out_proj.bias", "out")]
                else:
                    names += [(f"{ours}.{our}.norm.gamma", f"{theirs}.{their}.weight", "out"),
                              (f"{ours}.{our}.norm.beta", f"{theirs}.{their}.bias", "out")]
            names += [(f"{ours}.feed_forward.w_1.weight", f"{theirs}.fc1.weight", "in"),
                      (f"{ours}.feed_forward.w_1.bias", f"{theirs}.fc1.bias", ""),
                      (f"{ours}.feed_forward.w_2.weight", f"{theirs}.fc2.weight", "out"),
                      (f"{ours}.feed_forward.w_2.bias", f"{theirs}.fc2.bias", "out")]
    return names


def permuted(t: torch.Tensor, order: torch.Tensor, axis: str) -> torch.Tensor:
    """t with its d_model axis (see layer_names) in `order`."""
    return t[:, order] if axis == "in" else t[order] if axis == "out" else t


def marian_state_dict(model) -> dict[str, torch.Tensor]:
    """Our weights under Marian's names, in Marian's order of the d_model dimensions."""
    c, ours = model.config, model.state_dict()
    p = interleaved_to_halves(c.d_model)
    embed = ours["src_embed.weight"][:, p]
    out = {"model.shared.weight": embed, "model.encoder.embed_tokens.weight": embed,
           "model.decoder.embed_tokens.weight": embed,
           "final_logits_bias": ours["generator.bias"][None] if c.output_bias else torch.zeros(1, c.tgt_vocab_size)}
    out["lm_head.weight"] = (ours["src_embed.weight"] if c.tie_output else ours["generator.weight"])[:, p]
    for our, theirs, axis in layer_names(c.n_encoder_layers, c.n_decoder_layers):
        out[theirs] = permuted(ours[our], p, axis)
    return {k: v.contiguous().clone() for k, v in out.items()}


def hf_tokenizer(tok):
    """Our tokenizer.json as a PreTrainedTokenizerFast that appends </s> to a source, as we do."""
    transformers = need("transformers", "Hugging Face Transformers")
    from tokenizers import Tokenizer
    from tokenizers.processors import TemplateProcessing

    copy = Tokenizer.from_str(tok.to_str())
    copy.post_processor = TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", EOS_ID)])
    pad, unk, bos, eos = (SPECIALS[i] for i in (PAD_ID, UNK_ID, BOS_ID, EOS_ID))
    return transformers.PreTrainedTokenizerFast(tokenizer_object=copy, pad_token=pad, unk_token=unk,
                                                bos_token=bos, eos_token=eos)


def export_hf(translator, out: Path, name: str) -> None:
    """Write translator's model as a MarianMTModel directory with its tokenizer and a README naming the
    directory `name`, into `out`; RunError for a model Marian cannot express."""
    transformers = need("transformers", "Hugging Face Transformers")
    model = translator.model
    c = model.config
    refuse_unless_marian_like(c, "Hugging Face Transformers")
    if c.layer_norm_eps != 1e-5:
        raise RunError(f"Marian's layer norm epsilon is 1e-5; this run has {c.layer_norm_eps:g}")
    hf = transformers.MarianMTModel(marian_config(c)).eval()
    missing, unexpected = hf.load_state_dict(marian_state_dict(model), strict=False)
    missing = [k for k in missing if "embed_positions" not in k]  # recomputed by Marian
    if missing or unexpected:
        raise RunError(f"internal: Marian weights missing {missing[:3]} / unexpected {unexpected[:3]}")
    d = translator.defaults  # the run's search.json over translate's defaults; GNMT's penalty has no
    alpha = d.length_penalty if d.length_style == "average" else 1.0  # Hugging Face name: its own 1.0 stands
    hf.generation_config = transformers.GenerationConfig(
        decoder_start_token_id=BOS_ID, bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID,
        max_length=c.max_len, num_beams=d.beam_size, length_penalty=alpha, early_stopping=True,
        bad_words_ids=[[PAD_ID], [BOS_ID]])  # never generated, as in transformer-cli
    try:
        hf.save_pretrained(out)
        hf_tokenizer(translator.toks.src).save_pretrained(out)
    except (RuntimeError, ValueError) as e:
        raise RunError(f"Hugging Face export failed: {str(e).splitlines()[0][:200]}") from None
    finish(out, README.format(name=name))


README = """# {name}: a transformer-cli model as a Hugging Face MarianMTModel

```python
from transformers import AutoTokenizer, MarianMTModel
tok = AutoTokenizer.from_pretrained("{name}")
model = MarianMTModel.from_pretrained("{name}")
batch = tok(["I am a student."], return_tensors="pt", padding=True)
out = model.generate(**batch)          # beam search (generation_config.json); num_beams=1 for greedy
print(tok.batch_decode(out, skip_special_tokens=True))
```

Greedy decoding gives the same tokens as `transformer-cli translate --beam-size 1`. Beam search
ranks finished hypotheses by log-probability / length ** length_penalty, while transformer-cli uses
GNMT's length penalty, so beam outputs can differ. The weights express the same network in Marian's
order of the d_model dimensions (sines first, then cosines), since Marian recomputes its own
sinusoidal table.
"""
