"""Translation quality against references: sacreBLEU's BLEU (13a, cased), lowercased BLEU and chrF.
The one place the toolkit scores (validation, translate --reference, the benchmarks)."""

from __future__ import annotations

from dataclasses import dataclass

from transformer_cli.errors import RunError


@dataclass(frozen=True)
class Scores:
    """Corpus scores of a list of translations, with what sacreBLEU prints for them."""

    bleu: float  # BLEU, cased, 13a tokenisation
    bleu_lowercase: float  # the same, lowercased
    chrf: float  # chrF (character n-grams: language-agnostic)
    bleu_line: str  # sacreBLEU's one-line BLEU report (score, n-gram precisions, brevity penalty)
    chrf_line: str
    bleu_signature: str  # nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:...
    chrf_signature: str


def score(hypotheses: list[str], references: list[str], what: str = "references") -> Scores:
    """Scores of hypotheses[i] against references[i]; `what` names the references in the error when
    the two lists differ in length."""
    from sacrebleu.metrics import BLEU, CHRF

    if len(references) != len(hypotheses):
        raise RunError(f"{what} has {len(references)} lines but {len(hypotheses)} lines were translated")
    bleu, lowercase, chrf = BLEU(), BLEU(lowercase=True), CHRF()
    b, c = bleu.corpus_score(hypotheses, [references]), chrf.corpus_score(hypotheses, [references])
    return Scores(bleu=b.score, bleu_lowercase=lowercase.corpus_score(hypotheses, [references]).score,
                  chrf=c.score, bleu_line=str(b), chrf_line=str(c), bleu_signature=str(bleu.get_signature()),
                  chrf_signature=str(chrf.get_signature()))
