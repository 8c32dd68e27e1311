"""Choose the final weights and the search settings of a run on the validation split only (issue 10).

  python bench/select_on_val.py --run work/quality/de-en-40m [--data ../shared/data/multi30k]

Part 1: the mean of the last N checkpoints (N = 1 .. the checkpoints kept), the best checkpoint, the
mean of the checkpoints around it and, for a run with --ema-decay, the means of the last N
checkpoints' moving averages, each decoded with beam 5 at the length penalties of --alphas. Part 2
(unless --no-grid): the weights that scored best, over a grid of beam sizes and length penalties.
sacreBLEU (cased, 13a) and chrF on the whole validation file; the test set is never read.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transformer.checkpoint import AVERAGE_FILE, MODEL_FILE, average_weights  # noqa: E402
from transformer_cli.metrics import best_from_metrics  # noqa: E402
from transformer_cli.scoring import score as score_texts  # noqa: E402
from transformer_cli.run_dir import own_checkpoints  # noqa: E402
from transformer_cli.translator import SearchOptions, load_run  # noqa: E402


def read(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def score(translator, sources: list[str], refs: list[str], beam: int, alpha: float) -> tuple[float, float, float]:
    start = time.perf_counter()
    hyps = [t.text for t in translator.translate(sources, SearchOptions(beam_size=beam, length_penalty=alpha))]
    seconds = time.perf_counter() - start
    scores = score_texts(hyps, refs)
    return scores.bleu, scores.chrf, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/multi30k"))
    ap.add_argument("--split", default="val")
    ap.add_argument("--alphas", default="0.6,1.0", help="length penalties of part 1")
    ap.add_argument("--grid-alphas", default="0.6,0.8,1.0,1.2,1.5")
    ap.add_argument("--grid-beams", default="4,5,8")
    ap.add_argument("--no-grid", action="store_true", help="part 1 only")
    args = ap.parse_args()
    config = json.loads((args.run / "config.json").read_text())
    src, tgt = config["data"]["src_lang"], config["data"]["tgt_lang"]
    sources, refs = read(args.data / f"{args.split}.{src}.gz"), read(args.data / f"{args.split}.{tgt}.gz")
    translator = load_run(args.run, pack=False)
    checkpoints = own_checkpoints(args.run, config["run_id"])
    best_step = best_from_metrics(args.run)["step"]
    variants = {f"mean of last {n} ({', '.join(c.name[5:].lstrip('0') for c in checkpoints[-n:])})":
                [c / MODEL_FILE for c in checkpoints[-n:]] for n in range(1, len(checkpoints) + 1)}
    best = [c for c in checkpoints if int(c.name[5:]) == best_step]
    if best:
        variants[f"best by validation during training (step {best_step})"] = [best[0] / MODEL_FILE]
        at = checkpoints.index(best[0])
        for k in (1, 2):  # the checkpoints around the best one (issue 26)
            around = checkpoints[max(0, at - k): at + k + 1]
            variants[f"mean around the best ({', '.join(c.name[5:].lstrip('0') for c in around)})"] = \
                [c / MODEL_FILE for c in around]
    averaged = [c for c in checkpoints if (c / AVERAGE_FILE).is_file()]  # runs with --ema-decay
    for n in range(1, len(averaged) + 1):
        variants[f"moving averages, mean of last {n} ({', '.join(c.name[5:].lstrip('0') for c in averaged[-n:])})"] = \
            [c / AVERAGE_FILE for c in averaged[-n:]]
    alphas = [float(a) for a in args.alphas.split(",")]
    print(f"{args.run}, {args.split} ({len(sources)} sentences), beam 5\n")
    print("| weights | " + " | ".join(f"BLEU / chrF, alpha {a:g}" for a in alphas) + " |")
    print("|---|" + "---|" * len(alphas))
    results = {}
    for name, paths in variants.items():
        translator.model.load_state_dict(average_weights(paths), strict=False)
        row = [score(translator, sources, refs, 5, a) for a in alphas]
        results[name] = max(r[0] for r in row)
        print(f"| {name} | " + " | ".join(f"{b:.2f} / {c:.2f}" for b, c, _ in row) + " |", flush=True)
    chosen = max(results, key=results.get)
    if args.no_grid:
        print(f"\nbest: {chosen}")
        return
    translator.model.load_state_dict(average_weights(variants[chosen]), strict=False)
    beams = [int(b) for b in args.grid_beams.split(",")]
    print(f"\n{chosen}: BLEU (seconds) by beam size and length penalty\n")
    print("| alpha | " + " | ".join(f"beam {b}" for b in beams) + " |")
    print("|---|" + "---|" * len(beams))
    for a in (float(x) for x in args.grid_alphas.split(",")):
        row = [score(translator, sources, refs, b, a) for b in beams]
        print(f"| {a:g} | " + " | ".join(f"{r[0]:.2f} ({r[2]:.1f})" for r in row) + " |", flush=True)


if __name__ == "__main__":
    main()
