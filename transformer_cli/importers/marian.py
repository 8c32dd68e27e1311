"""Import a Hugging Face MarianMTModel directory in the OPUS-MT layout as a run directory.

OPUS-MT's models are the paper's post-norm encoder-decoder with three conventions of their own, each
mapped onto ours rather than given a second code path:
- the feed-forward activation (swish) and the output bias (final_logits_bias) are ModelConfig options;
- the sinusoidal table puts all sines first and all cosines second, ours interleaves them: the
  weights are permuted over the d_model dimensions (the inverse of exporters/hf.py's permutation);
- the vocabulary has </s> = 0, <unk> = 1, <pad> last (also the decoder's start token) and no <s>:
  the embedding, output and bias rows are permuted to ours (<pad> <unk> <s> </s> at 0-3, then
  Marian's tokens in their order), Marian's <pad> row serving as our <pad> and as our <s>, whose
  output is switched off (bias -inf) so that the softmax is Marian's over the same classes.
Nothing is unpickled: the weights are read from model.safetensors only."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch

from data.errors import DataError
from data.sentencepiece import read_model, unigram_tokenizer
from data.tokenizer import SPECIALS, Tokenizers
from transformer.checkpoint import CONFIG_FILE, MODEL_FILE, save_weights
from transformer.config import ModelConfig
from transformer.embeddings import sinusoidal_table
from transformer.files import atomic_directory, atomic_write_text, sha256_file
from transformer.json_text import loads
from transformer.model import Transformer
from transformer_cli.errors import RunError, named, os_error_message
from transformer_cli.exporters.hf import interleaved_to_halves, layer_names, permuted
from transformer_cli.runtime import MAX_BEAM
from transformer_cli.search_defaults import write_search

ACTIVATIONS = {"relu": "relu", "swish": "swish", "silu": "swish", "gelu": "gelu"}  # Marian's -> ours
MANIFEST = "manifest.json"
CODE = re.compile(r"^>>.+<<$")  # a multilingual model's target-language token, >>fra<<
NOT_MODELLED = ("normalize_before", "normalize_embedding", "add_final_layer_norm", "layernorm_embedding",
                "add_bias_logits")  # settings of pre-norm / BART-style variants


@dataclass(frozen=True)
class ImportResult:
    """What import_marian wrote."""

    run_dir: Path
    model_config: ModelConfig
    src_lang: str
    tgt_lang: str
    language_codes: list[str]  # >>xx<< tokens a source line may start with (multilingual targets)


def import_marian(source: str | Path, out: str | Path) -> ImportResult:
    """Convert the MarianMTModel directory `source` into a new run directory `out` (config.json,
    model.safetensors, tokenizer.src.json + tokenizer.tgt.json, manifest.json). Anything that is not
    an OPUS-MT Marian model, or disagrees with itself, is a RunError and nothing is written."""
    source, out = Path(source), Path(out).resolve()
    _check_out(out)
    hf, tokenizer_config = _read_config(source)
    tgt_file = source / ("target_vocab.json" if tokenizer_config.get("separate_vocabs") else "vocab.json")
    src_vocab = _vocab_list(source / "vocab.json")
    tgt_vocab = src_vocab if tgt_file.name == "vocab.json" else _vocab_list(tgt_file)  # one list when joint
    src_order, tgt_order = our_order(src_vocab, source / "vocab.json"), our_order(tgt_vocab, tgt_file)
    toks, codes = _tokenizers(source, src_vocab, tgt_vocab, src_order, tgt_order)
    tensors = _read_weights(source)
    config = model_config(hf, len(src_order), len(tgt_order), src_vocab is tgt_vocab)
    _check_shapes(tensors, hf, len(src_vocab), len(tgt_vocab), source)
    model = Transformer(config)
    missing, unexpected = model.load_state_dict(our_state_dict(tensors, config, src_order, tgt_order), strict=False)
    if unexpected or set(missing) - {"generator.weight"}:  # the tied output projection is the embedding
        raise RunError(f"internal: converted weights missing {missing[:3]} / unexpected {unexpected[:3]}")
    langs = (str(tokenizer_config.get("source_lang") or "src"), str(tokenizer_config.get("target_lang") or "tgt"))
    search = search_of(hf, source)
    try:
        with atomic_directory(out) as work:
            _write_run(work, model, toks, source, langs, codes)
            write_search(work, search, {"on": f"the search settings of {source.resolve()} (Hugging Face)"})
    except OSError as e:
        raise RunError(os_error_message(e)) from None
    return ImportResult(out, config, langs[0], langs[1], codes)


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RunError(f"{named('out')} {out} exists and is not an empty directory", "out")
    if not out.name:
        raise RunError(f"{named('out')} {out}: name a directory to write the run into", "out")


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise RunError(f"{path.parent}: no {path.name} ({what})")
    try:
        data = loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, DataError, ValueError) as e:
        raise RunError(f"{path}: not valid JSON ({str(e)[:100]})") from None
    if not isinstance(data, dict):
        raise RunError(f"{path}: expected a JSON object")
    return data


def _read_config(source: Path) -> tuple[dict, dict]:
    """config.json (checked to be a post-norm OPUS-MT Marian) and tokenizer_config.json."""
    if not source.is_dir():
        raise RunError(f"{named('source')} {source}: directory not found", "source")
    hf = _read_json(source / "config.json", "is this a Hugging Face model directory?")
    kind = hf.get("model_type")
    if kind != "marian":
        raise RunError(f"{source}: a {kind or 'unknown'} model (config.json model_type), not Marian: only "
                       "MarianMTModel (OPUS-MT) directories can be imported")
    for key in NOT_MODELLED:
        if hf.get(key):
            raise RunError(f"{source}: config.json sets {key}, a Marian variant this toolkit does not model "
                           "(it imports OPUS-MT's post-norm models)")
    for key, want in (("scale_embedding", True), ("static_position_embeddings", True)):
        if hf.get(key, want) is not want:
            raise RunError(f"{source}: config.json has {key}={hf.get(key)!r}; only OPUS-MT's {key}={want} "
                           "(embeddings x sqrt(d_model), sinusoidal positions) is modelled")
    if ACTIVATIONS.get(hf.get("activation_function")) is None:
        raise RunError(f"{source}: activation_function {hf.get('activation_function')!r} is not one of "
                       f"{', '.join(ACTIVATIONS)}")
    for a, b in (("encoder_attention_heads", "decoder_attention_heads"), ("encoder_ffn_dim", "decoder_ffn_dim")):
        if hf.get(a) != hf.get(b):
            raise RunError(f"{source}: {a} ({hf.get(a)}) differs from {b} ({hf.get(b)}); the toolkit's "
                           "encoder and decoder share these sizes")
    tokenizer_config = _read_json(source / "tokenizer_config.json", "the MarianTokenizer settings") \
        if (source / "tokenizer_config.json").exists() else {}
    return hf, tokenizer_config


def search_of(hf: dict, source: Path) -> dict:
    """The search the model was published with, as search.json fields: generation_config.json's (else
    config.json's) num_beams and length_penalty. Hugging Face ranks finished hypotheses by
    log P / |Y|^length_penalty, |Y| counting </s>: the `average` style (its default penalty, 1.0, is
    translate's). A value that is not set, or that the toolkit cannot take (a negative penalty, a beam
    over MAX_BEAM), is left out: translate's default stands."""
    path = source / "generation_config.json"
    settings = _read_json(path, "generation settings") if path.is_file() else hf
    fields: dict = {"length_style": "average"}
    beams, alpha = settings.get("num_beams"), settings.get("length_penalty")  # left out: translate's
    if isinstance(beams, int) and not isinstance(beams, bool) and 1 <= beams <= MAX_BEAM:
        fields["beam_size"] = beams
    if isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and 0.0 <= alpha <= 10.0:
        fields["length_penalty"] = float(alpha)
    return fields


def _vocab_list(path: Path) -> list[str]:
    vocab = _read_json(path, "the Marian vocabulary")
    ids = sorted(vocab.values()) if all(isinstance(i, int) and not isinstance(i, bool) for i in vocab.values()) \
        else None
    if ids != list(range(len(vocab))):
        raise RunError(f"{path}: not a vocabulary (token -> id, the ids 0..{len(vocab) - 1} once each)")
    tokens = [""] * len(vocab)
    for token, i in vocab.items():
        tokens[i] = token
    return tokens


def our_order(vocab: list[str], path: Path) -> list[int]:
    """Marian id of each of our ids: <pad> <unk> <s> </s> (Marian's <pad>, <unk>, <pad>, </s>), then
    Marian's other tokens in Marian's order."""
    index = {t: i for i, t in enumerate(vocab)}
    missing = [s for s in ("<pad>", "<unk>", "</s>") if s not in index]
    if missing:
        raise RunError(f"{path}: no {', '.join(missing)} in the vocabulary")
    if "<s>" in index:
        raise RunError(f"{path}: has a <s> token; OPUS-MT vocabularies start decoding from <pad> and have none")
    specials = [index["<pad>"], index["<unk>"], index["<pad>"], index["</s>"]]
    return specials + [i for i in range(len(vocab)) if i not in set(specials)]


def _tokenizers(source: Path, src_vocab: list[str], tgt_vocab: list[str], src_order: list[int],
                tgt_order: list[int]) -> tuple[Tokenizers, list[str]]:
    """Each side's SentencePiece model as a tokenizers Unigram tokenizer with our ids."""
    def ours(vocab: list[str], order: list[int]) -> list[str]:
        return list(SPECIALS) + [vocab[i] for i in order[len(SPECIALS):]]

    src_tokens, tgt_tokens = ours(src_vocab, src_order), ours(tgt_vocab, tgt_order)
    codes = [t for t in src_tokens if CODE.match(t)]
    try:
        src = unigram_tokenizer(read_model(source / "source.spm"), src_tokens, tuple(codes))
        tgt = unigram_tokenizer(read_model(source / "target.spm"), tgt_tokens)
    except DataError as e:
        raise RunError.wrap(e) from None
    return Tokenizers(src, tgt), codes


def _read_weights(source: Path) -> dict[str, torch.Tensor]:
    """model.safetensors (or its shards), never a pickle."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    single, index = source / "model.safetensors", source / "model.safetensors.index.json"
    if single.is_file():
        files = [single]
    elif index.is_file():
        weight_map = _read_json(index, "the safetensors shards").get("weight_map", {})
        files = [source / name for name in sorted(set(weight_map.values()))]
    elif (source / "pytorch_model.bin").exists():
        raise RunError(f"{source}: only pytorch_model.bin (a pickle, which this toolkit never loads); convert it "
                       "once with transformers: python -c \"from transformers import MarianMTModel; "
                       f"MarianMTModel.from_pretrained('{source}').save_pretrained('{source}')\"")
    else:
        raise RunError(f"{source}: no model.safetensors")
    tensors: dict[str, torch.Tensor] = {}
    for path in files:
        try:
            tensors.update(load_file(str(path)))
        except (SafetensorError, OSError, ValueError) as e:
            raise RunError(f"{path}: not a readable safetensors file ({str(e)[:100]})") from None
    return {k: v.float() for k, v in tensors.items()}


def model_config(hf: dict, src_vocab: int, tgt_vocab: int, joint: bool) -> ModelConfig:
    """Our ModelConfig of a Marian config.json, with our vocabulary sizes (Marian's + 1: <s>)."""
    try:
        return ModelConfig(
            src_vocab_size=src_vocab, tgt_vocab_size=tgt_vocab, d_model=hf["d_model"],
            n_heads=hf["encoder_attention_heads"], d_ff=hf["encoder_ffn_dim"], n_encoder_layers=hf["encoder_layers"],
            n_decoder_layers=hf["decoder_layers"], dropout=float(hf.get("dropout", 0.1)),
            attention_dropout=float(hf.get("attention_dropout", 0.0)), max_len=hf.get("max_position_embeddings", 512),
            pad_id=0, norm="post", tie_output=bool(hf.get("tie_word_embeddings", True)),
            share_embeddings=joint and bool(hf.get("share_encoder_decoder_embeddings", True)),
            activation=ACTIVATIONS[hf["activation_function"]], output_bias=True)
    except (KeyError, TypeError, ValueError) as e:
        raise RunError(f"config.json: not a usable Marian configuration ({e})") from None


def expected_shapes(hf: dict, src_vocab: int, tgt_vocab: int) -> dict[str, tuple[int, ...]]:
    """Marian's tensor names -> the shapes config.json implies (the output bias by the vocabulary)."""
    d, f = hf["d_model"], hf["encoder_ffn_dim"]
    shape = {"q_proj.weight": (d, d), "k_proj.weight": (d, d), "v_proj.weight": (d, d), "out_proj.weight": (d, d),
             "fc1.weight": (f, d), "fc1.bias": (f,), "fc2.weight": (d, f)}
    shapes = {theirs: next((v for k, v in shape.items() if theirs.endswith(k)), (d,))
              for _, theirs, _ in layer_names(hf["encoder_layers"], hf["decoder_layers"])}
    return {"final_logits_bias": (1, tgt_vocab), **shapes}


def _check_shapes(tensors: dict[str, torch.Tensor], hf: dict, src_vocab: int, tgt_vocab: int, source: Path) -> None:
    """Every tensor the model needs is there with config.json's shape; nothing else is."""
    for name, rows in (("src", src_vocab), ("tgt", tgt_vocab)):
        embed = _embedding(tensors, name, source)
        if tuple(embed.shape) != (rows, hf["d_model"]):
            raise RunError(f"{source}: the {'source' if name == 'src' else 'target'} embedding has shape "
                           f"{tuple(embed.shape)}, the vocabulary has {rows} tokens (d_model {hf['d_model']})")
    expected = expected_shapes(hf, src_vocab, tgt_vocab)
    for name, shape in expected.items():
        if name not in tensors:
            raise RunError(f"{source}: model.safetensors has no {name}")
        if tuple(tensors[name].shape) != shape:
            raise RunError(f"{source}: {name} has shape {tuple(tensors[name].shape)}, config.json says {shape}")
    known = set(expected) | {"model.shared.weight", "model.encoder.embed_tokens.weight",
                             "model.decoder.embed_tokens.weight", "lm_head.weight"}
    for side in ("encoder", "decoder"):
        name = f"model.{side}.embed_positions.weight"
        if name in tensors:
            _check_positions(tensors[name], hf["d_model"], name, source)
            known.add(name)
    unexpected = sorted(set(tensors) - known)
    if unexpected:
        raise RunError(f"{source}: model.safetensors has weights a post-norm OPUS-MT model does not have "
                       f"({', '.join(unexpected[:3])}): a Marian variant this toolkit does not model")


def _check_positions(table: torch.Tensor, d_model: int, name: str, source: Path) -> None:
    """A stored position table must be Marian's sinusoids (ours in sines-then-cosines order)."""
    ours = sinusoidal_table(table.size(0), d_model)[:, interleaved_to_halves(d_model)]
    if not torch.allclose(table.float(), ours, atol=1e-4):
        raise RunError(f"{source}: {name} is not the sinusoidal table (learned positions are not modelled)")


def _embedding(tensors: dict[str, torch.Tensor], side: str, source: Path) -> torch.Tensor:
    name = "model.encoder.embed_tokens.weight" if side == "src" else "model.decoder.embed_tokens.weight"
    found = tensors.get(name, tensors.get("model.shared.weight"))
    if found is None:
        raise RunError(f"{source}: model.safetensors has no {name} (nor model.shared.weight)")
    return found


def our_state_dict(tensors: dict[str, torch.Tensor], c: ModelConfig, src_order: list[int],
                   tgt_order: list[int]) -> dict[str, torch.Tensor]:
    """Marian's weights under our names, our vocabulary order and our order of the d_model dimensions
    (ours = marian[inverse permutation]: exporters/hf.py writes marian = ours[interleaved_to_halves])."""
    q = torch.argsort(interleaved_to_halves(c.d_model))
    src, tgt = torch.tensor(src_order), torch.tensor(tgt_order)
    out = {"src_embed.weight": _embedding(tensors, "src", Path())[src][:, q],
           "tgt_embed.weight": _embedding(tensors, "tgt", Path())[tgt][:, q]}
    bias = tensors["final_logits_bias"][0][tgt].clone()
    bias[SPECIALS.index("<s>")] = float("-inf")  # <s> shares Marian's <pad> row; only <pad> is its class
    out["generator.bias"] = bias
    if not c.tie_output:
        out["generator.weight"] = tensors["lm_head.weight"][tgt][:, q]
    for our, theirs, axis in layer_names(c.n_encoder_layers, c.n_decoder_layers):
        out[our] = permuted(tensors[theirs], q, axis)
    return {k: v.contiguous() for k, v in out.items()}


def _write_run(work: Path, model: Transformer, toks: Tokenizers, source: Path, langs: tuple[str, str],
               codes: list[str]) -> None:
    """config.json, model.safetensors, the tokenizers and manifest.json into `work`."""
    from data.versions import library_versions

    save_weights(model, work / MODEL_FILE)
    toks.save(work)
    fingerprint = Tokenizers.load(work).fingerprint()  # of the files (scores are read back as written)
    data = {"src_lang": langs[0], "tgt_lang": langs[1], "tokenizer_fingerprint": fingerprint,
            "language_codes": codes}
    config = {"model": model.config.to_dict(), "training": {}, "data": data, "preset": "imported",
              "run_id": uuid.uuid4().hex, "imported": {"from": str(source.resolve()), "format": "marian"},
              "versions": library_versions("torch")}
    atomic_write_text(work / CONFIG_FILE, json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    files = {p.name: sha256_file(p) for p in sorted(source.iterdir()) if p.is_file()}
    manifest = {"imported_from": str(source.resolve()), "format": "Hugging Face MarianMTModel (OPUS-MT layout)",
                "files_sha256": files, "versions": library_versions("torch", "tokenizers", "sentencepiece", "safetensors")}
    atomic_write_text(work / MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
