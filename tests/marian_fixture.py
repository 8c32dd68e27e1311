"""A real OPUS-MT-layout directory built offline (the hub is unreachable here): SentencePiece models
trained with `sentencepiece` on a slice of Multi30k, a small MarianMTModel with OPUS-MT's settings
(swish, a non-zero final_logits_bias, <pad> as the decoder's start, tied embeddings) saved by
save_pretrained, and MarianTokenizer.save_pretrained beside it. bench/ builds its models with it too."""

from __future__ import annotations

import gzip
import io
import json
import random
from pathlib import Path

MULTI30K = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "multi30k"


def multi30k_lines(split: str, lang: str, limit: int | None = None) -> list[str]:
    with gzip.open(MULTI30K / f"{split}.{lang}.gz", "rt", encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f]
    return lines[:limit] if limit else lines


def train_spm(lines: list[str], vocab_size: int, path: Path, coverage: float = 0.9995) -> None:
    """A unigram SentencePiece model as Marian trains them: <unk> <s> </s> at 0-2, no <pad>."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=model, vocab_size=vocab_size,
                                   model_type="unigram", character_coverage=coverage, unk_id=0, bos_id=1,
                                   eos_id=2, pad_id=-1, minloglevel=2, num_threads=1, hard_vocab_limit=False)
    path.write_bytes(model.getvalue())


def spm_pieces(path: Path) -> list[str]:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(path))
    return [sp.id_to_piece(i) for i in range(sp.get_piece_size()) if not (sp.is_control(i) or sp.is_unknown(i))]


def marian_vocab(pieces: list[str], seed: int, extra: tuple[str, ...] = ()) -> dict[str, int]:
    """vocab.json in Marian's convention: </s> 0, <unk> 1, the pieces (in an order unlike the
    SentencePiece ids, so a test sees the ids go through the vocabulary), <pad> last."""
    order = sorted(set(pieces)) + list(extra)
    random.Random(seed).shuffle(order)
    vocab = {"</s>": 0, "<unk>": 1}
    for piece in order:
        vocab.setdefault(piece, len(vocab))
    vocab["<pad>"] = len(vocab)
    return vocab


def build_opus_mt(out: Path, *, src: str = "de", tgt: str = "en", lines: int = 3000, vocab: int = 400,
                  d_model: int = 32, layers: int = 2, heads: int = 4, d_ff: int = 64, activation: str = "swish",
                  separate_vocabs: bool = False, language_codes: tuple[str, ...] = (), seed: int = 0,
                  train_steps: int = 300, batch: int = 32, lr: float = 3e-3, warmup: int = 0) -> Path:
    """An OPUS-MT-layout directory at `out` with a MarianMTModel trained for `train_steps` updates on
    the same Multi30k slice (a few seconds: enough for sentences that end and attention with a
    structure); its final_logits_bias stays random (transformers keeps it as a buffer); returns out."""
    import torch
    import transformers

    out.mkdir(parents=True, exist_ok=True)
    train_spm(multi30k_lines("train", src, lines), vocab, out / "source.spm")
    train_spm(multi30k_lines("train", tgt, lines), vocab, out / "target.spm")
    src_pieces, tgt_pieces = spm_pieces(out / "source.spm"), spm_pieces(out / "target.spm")
    if separate_vocabs:
        src_vocab = marian_vocab(src_pieces, seed, language_codes)  # the code starts the source text
        tgt_vocab = marian_vocab(tgt_pieces, seed + 1)
        (out / "target_vocab.json").write_text(json.dumps(tgt_vocab, ensure_ascii=False))
    else:
        src_vocab = tgt_vocab = marian_vocab(src_pieces + tgt_pieces, seed, language_codes)
    (out / "vocab.json").write_text(json.dumps(src_vocab, ensure_ascii=False))
    pad = tgt_vocab["<pad>"]
    config = transformers.MarianConfig(
        vocab_size=len(src_vocab), decoder_vocab_size=len(tgt_vocab), d_model=d_model, encoder_layers=layers,
        decoder_layers=layers, encoder_attention_heads=heads, decoder_attention_heads=heads, encoder_ffn_dim=d_ff,
        decoder_ffn_dim=d_ff, activation_function=activation, max_position_embeddings=512, scale_embedding=True,
        share_encoder_decoder_embeddings=not separate_vocabs, tie_word_embeddings=True, pad_token_id=pad,
        eos_token_id=0, decoder_start_token_id=pad, forced_eos_token_id=0, normalize_before=False,
        static_position_embeddings=True, dropout=0.1, attention_dropout=0.0, activation_dropout=0.0,
        architectures=["MarianMTModel"])
    torch.manual_seed(seed)
    model = transformers.MarianMTModel(config).eval()
    with torch.no_grad():
        model.final_logits_bias.normal_(0.0, 0.5)
    model.generation_config = transformers.GenerationConfig(
        bad_words_ids=[[pad]], decoder_start_token_id=pad, eos_token_id=0, forced_eos_token_id=0, max_length=512,
        num_beams=4, pad_token_id=pad)
    tokenizer = transformers.MarianTokenizer(
        source_spm=str(out / "source.spm"), target_spm=str(out / "target.spm"), vocab=str(out / "vocab.json"),
        target_vocab_file=str(out / "target_vocab.json") if separate_vocabs else None,
        separate_vocabs=separate_vocabs, source_lang=src, target_lang=tgt)
    _train(model, tokenizer, multi30k_lines("train", src, lines), multi30k_lines("train", tgt, lines), train_steps,
           language_codes, batch, lr, warmup)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _train(model, tokenizer, src: list[str], tgt: list[str], steps: int, codes: tuple[str, ...], batch: int,
           lr: float, warmup: int) -> None:
    """Adam updates of `batch` random pairs, the rate warmed up linearly over `warmup` steps then
    decayed as 1/sqrt(step) (a code, when the model has some, starts each source)."""
    import torch

    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.98))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 1.0 if not warmup else min((step + 1) / warmup, (warmup / (step + 1)) ** 0.5))
    rng = random.Random(0)
    model.train()
    for _ in range(steps):
        pick = rng.sample(range(len(src)), batch)
        pairs = tokenizer([(rng.choice(codes) + " " if codes else "") + src[i] for i in pick],
                          text_target=[tgt[i] for i in pick], return_tensors="pt", padding=True, truncation=True,
                          max_length=64)
        pairs["labels"][pairs["labels"] == tokenizer.pad_token_id] = -100
        loss = model(**pairs).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
    model.eval()
