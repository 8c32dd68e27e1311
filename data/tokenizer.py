"""BPE tokenizers (Hugging Face `tokenizers`): NFKC, SentencePiece-style ▁ word marker, fixed specials."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from data.errors import DataError
from transformer.errors import named

SPECIALS = ("<pad>", "<unk>", "<s>", "</s>")
PAD_ID, UNK_ID, BOS_ID, EOS_ID = range(4)
UNMATCHABLE = " "  # ends a token no text can match (normalised text has no plain space): data.sentencepiece
JOINT_FILE = "tokenizer.json"
SIDE_FILES = {"src": "tokenizer.src.json", "tgt": "tokenizer.tgt.json"}


def new_bpe() -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.NFKC()
    # "▁" marks the start of a word; punctuation becomes its own piece ("student" + ".")
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Metaspace(), pre_tokenizers.Punctuation("isolated")]
    )
    tok.decoder = decoders.Metaspace()
    return text_only(tok)


def text_only(tok: Tokenizer) -> Tokenizer:
    """Text is text: "<s>" typed by a user is encoded as the characters <, s, > and never as the
    control id, which only the code adds. (tokenizers does not save this switch in tokenizer.json, nor
    through pickling, so it is set on every load and before every encode.)"""
    tok.encode_special_tokens = True
    return tok


def train_bpe(texts: Iterable[str], vocab_size: int, min_frequency: int = 2,
              length: int | None = None) -> Tokenizer:
    """Train BPE on `texts`; the specials get ids 0-3 (<pad> <unk> <s> </s>)."""
    if vocab_size <= len(SPECIALS):
        raise DataError(f"{named('vocab_size')} {vocab_size} is too small: the {len(SPECIALS)} special tokens "
                        f"{' '.join(SPECIALS)} alone need {len(SPECIALS)}, and at least one more is needed",
                        "vocab_size")
    tok = new_bpe()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=list(SPECIALS), show_progress=False)
    tok.train_from_iterator(texts, trainer, length=length)
    assert [tok.token_to_id(s) for s in SPECIALS] == list(range(len(SPECIALS)))
    return tok


@dataclass
class Tokenizers:
    """The tokenizer of each side; one object for both when the vocabulary is joint."""

    src: Tokenizer
    tgt: Tokenizer

    @property
    def joint(self) -> bool:
        return self.src is self.tgt

    def save(self, directory: Path) -> list[str]:
        """tokenizer.json (joint), or tokenizer.src.json + tokenizer.tgt.json, in `directory`; returns
        the file names written (source first)."""
        if self.joint:
            self.src.save(str(directory / JOINT_FILE))
            return [JOINT_FILE]
        self.src.save(str(directory / SIDE_FILES["src"]))
        self.tgt.save(str(directory / SIDE_FILES["tgt"]))
        return list(SIDE_FILES.values())

    @classmethod
    def load(cls, directory: Path) -> "Tokenizers":
        def read(name: str) -> Tokenizer:
            path = directory / name
            try:
                tok = Tokenizer.from_file(str(path))
            except Exception as e:  # noqa: BLE001 - the tokenizers error types are not public
                raise DataError(f"{path}: not a valid tokenizer file ({str(e).splitlines()[0][:120]})") from None
            if [tok.token_to_id(s) for s in SPECIALS] != list(range(len(SPECIALS))):
                raise DataError(f"{path}: special tokens are not {' '.join(SPECIALS)} at ids 0-3")
            return text_only(tok)

        if (directory / JOINT_FILE).is_file():
            tok = read(JOINT_FILE)
            return cls(tok, tok)
        if all((directory / f).is_file() for f in SIDE_FILES.values()):
            return cls(read(SIDE_FILES["src"]), read(SIDE_FILES["tgt"]))
        raise DataError(f"{directory}: no {JOINT_FILE} (or {SIDE_FILES['src']} + {SIDE_FILES['tgt']})")

    def fingerprint(self) -> str:
        """A short hash of the vocabularies and merges, to match a model with its tokenizer."""
        import hashlib

        h = hashlib.sha256()
        for tok in (self.src, self.tgt):
            h.update(json.dumps(json.loads(tok.to_str())["model"], sort_keys=True).encode())
        return h.hexdigest()[:16]


def encode_batch(tok: Tokenizer, texts: list[str]) -> list[list[int]]:
    """Texts -> ids, no special token added and none read from the text."""
    return [known_pieces(tok, e) if UNK_ID in e.ids else e.ids
            for e in text_only(tok).encode_batch(texts, add_special_tokens=False)]


def known_pieces(tok: Tokenizer, encoding) -> list[int]:
    """An <unk> whose text is an unmatchable token of the vocabulary takes that token's id: an
    imported Marian tokenizer's unknown SentencePiece pieces are looked up in vocab.json, as
    MarianTokenizer does (a German ß unknown to an English source model may be a target piece)."""
    def known(i: int, text: str) -> int:
        return i if i != UNK_ID else tok.token_to_id(text + UNMATCHABLE) or UNK_ID

    return [known(i, t) for i, t in zip(encoding.ids, encoding.tokens)]


def decode(tok: Tokenizer, ids: Iterable[int]) -> str:
    """Ids -> text, specials dropped (stops at nothing: callers cut at </s>)."""
    return tok.decode([i for i in ids if i >= len(SPECIALS)], skip_special_tokens=True)

