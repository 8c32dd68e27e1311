"""Speed on an imported model (issue 22): our `translate` path on an imported OPUS-MT-layout model
against transformers' `generate` on the original directory and CTranslate2 on the same directory
converted by its own `TransformersConverter` (what `ct2-transformers-converter` runs), float32 and
int8. Same sentences, the same length-sorted batches (ours), the same threads, one process; each
engine runs --repeats timed passes, interleaved, and the median is reported with the ratio to ours,
each engine's BLEU and how often its output equals ours.

    python bench/bench_imported.py --hf work/ft/opus-mt --run work/ft/imported [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "multi30k"


def lines(name: str) -> list[str]:
    with gzip.open(DATA / name, "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hf", type=Path, required=True, help="the OPUS-MT-layout directory")
    p.add_argument("--run", type=Path, required=True, help="the same model imported")
    p.add_argument("--sentences", type=int, default=1000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    import ctranslate2
    import transformers

    from transformer_cli import load_run
    from transformer_cli.scoring import score
    from transformer_cli.translator import SearchOptions

    src, refs = lines("test_2016_flickr.de.gz")[: a.sentences], lines("test_2016_flickr.en.gz")[: a.sentences]
    ours = load_run(a.run)
    hf = transformers.MarianMTModel.from_pretrained(a.hf).eval()
    tok = transformers.MarianTokenizer.from_pretrained(a.hf)
    groups = ours.batches(ours.encode(src).ids, 4000)  # our batches, for every engine
    tmp = Path(tempfile.mkdtemp())
    engines = {}
    for q in ("float32", "int8"):
        ctranslate2.converters.TransformersConverter(str(a.hf)).convert(str(tmp / q), quantization=q, force=True)
        engines[q] = ctranslate2.Translator(str(tmp / q), device="cpu", inter_threads=1, intra_threads=a.threads)

    def run_ours(beam: int) -> list[str]:
        return [t.text for t in ours.translate(src, SearchOptions(beam_size=beam, length_style="average"))]

    def run_hf(beam: int) -> list[str]:
        out = [""] * len(src)
        for g in groups:
            batch = tok([src[i] for i in g], return_tensors="pt", padding=True)
            longest = int(batch["attention_mask"].sum(1).max())
            with torch.inference_mode():
                rows = hf.generate(**batch, num_beams=beam, max_new_tokens=int(1.5 * longest + 10), length_penalty=1.0,
                                   early_stopping=True)
            for i, text in zip(g, tok.batch_decode(rows, skip_special_tokens=True)):
                out[i] = text
        return out

    def run_ct2(engine, beam: int) -> list[str]:
        out = [""] * len(src)
        for g in groups:
            pieces = [tok.convert_ids_to_tokens(tok(src[i])["input_ids"]) for i in g]
            longest = max(len(x) for x in pieces)
            results = engine.translate_batch(pieces, beam_size=beam, max_decoding_length=int(1.5 * longest + 10),
                                             length_penalty=1.0, max_batch_size=0)
            for i, r in zip(g, results):
                out[i] = tok.convert_tokens_to_string([t for t in r.hypotheses[0] if t not in ("</s>", "<pad>")])
        return out

    for beam in (1, 4):
        runs = {"ours fp32": lambda: run_ours(beam), "transformers generate": lambda: run_hf(beam),
                "CTranslate2 float32": lambda: run_ct2(engines["float32"], beam),
                "CTranslate2 int8": lambda: run_ct2(engines["int8"], beam)}
        times: dict[str, list[float]] = {k: [] for k in runs}
        outputs: dict[str, list[str]] = {}
        for name, fn in runs.items():  # warm-up
            outputs[name] = fn()
        for _ in range(a.repeats):
            for name, fn in runs.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        base = statistics.median(times["ours fp32"])
        print(f"\n{'greedy' if beam == 1 else 'beam 4'} ({len(src)} sentences, {a.threads} threads, median of "
              f"{a.repeats}, length_penalty 1.0 averaged)")
        print("| engine | seconds | sentences/s | time / ours | BLEU | identical to ours |")
        print("|---|---|---|---|---|---|")
        for name, ts in times.items():
            m = statistics.median(ts)
            same = sum(x == y for x, y in zip(outputs[name], outputs["ours fp32"]))
            print(f"| {name} | {m:.2f} | {len(src) / m:.0f} | {m / base:.2f} | {score(outputs[name], refs).bleu:.2f} | "
                  f"{same}/{len(src)} |")


if __name__ == "__main__":
    main()
