"""A trained run as it would be had it stopped at an earlier step (issue 26's "more time never hurts").

  python bench/stop_at.py --run work/quality/de-en-80m --step 3400 --out work/quality/de-en-80m-at3400
  python bench/stop_at.py --run work/quality/de-en-80m --minutes 40     # the last validation within 40 min

Training is deterministic for a seed and its schedule depends on the step only, so a run stopped at
step S (a validation step) is the longer run's first S steps: the same validations, the same moving
average at the same best one. This writes that run's directory (config, tokenizer, metrics cut at S,
and model.safetensors = the moving average saved in the checkpoint of the best validation up to S, as
`train` publishes it, and RUN/search.json: the length penalty chosen on the validation sample for
those weights, where the run's config chooses one), so `bench/quality.sh` scores it as any run. Needs
the run's checkpoints up to S (`train --keep-last` large enough). Checked on the run itself: stopping
at its last validation gives its own model.safetensors, tensor for tensor.

With `--trained` it publishes the trained weights of the checkpoint at S instead of the moving average
(what a run without --ema-decay would keep at its last step): the two compared on one run. A run with
--cooldown is not its own shorter run cut (its rate depends on the budget); cut it only at its end.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transformer.checkpoint import AVERAGE_FILE, MODEL_FILE  # noqa: E402
from transformer.trainer import TrainConfig  # noqa: E402
from transformer_cli import run_dir as rd  # noqa: E402
from transformer_cli.training import choose_search  # noqa: E402

COPIED = ("config.json", "tokenizer.json")


def events(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def step_at_minutes(evs: list[dict], minutes: float) -> int:
    """The last validation step whose training reached it within `minutes` (the train events' elapsed)."""
    reached = {e["step"]: e["elapsed"] for e in evs if e["event"] == "train"}
    evals = [e["step"] for e in evs if e["event"] == "eval"]
    within = [s for s in evals if max((t for st, t in reached.items() if st <= s), default=0.0) <= minutes * 60]
    return within[-1]


def published_at(run: Path, evs: list[dict], step: int) -> tuple[dict, int]:
    """The weights train publishes when it stops at `step`: the moving average of the best validation."""
    best = [e for e in evs if e["event"] == "eval" and e["step"] <= step and e.get("is_best")][-1]
    return checkpoint_weights(run, best["step"], AVERAGE_FILE), best["step"]


def checkpoint_weights(run: Path, step: int, name: str) -> dict:
    """One weights file of the checkpoint at `step`: MODEL_FILE (the trained weights) or AVERAGE_FILE."""
    path = run / "checkpoints" / f"step-{step:07d}" / name
    if not path.is_file():
        sys.exit(f"error: {path} is missing (train with a larger --keep-last)")
    return load_file(path)


def choose_like_train(run: Path, out: Path) -> None:
    """What train does after its last step when its config says choose_length_penalty: out's
    length penalty chosen on the validation sample (RUN/search.json)."""
    config = json.loads((run / "config.json").read_text())
    cfg = TrainConfig.from_dict(config["training"])
    if not cfg.choose_length_penalty:
        return
    _, valid, refs, srcs = rd.load_training_data(Path(config["data"]["prepared"]), cfg)
    rows = rd.validation_sample(valid.size, cfg.eval_samples)
    chosen = choose_search(out, "cpu", [srcs[i] for i in rows], [refs[i] for i in rows], lambda e: None, lambda: False)
    print(f"{out}: length penalty {chosen.length_penalty} chosen ({chosen.record()})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--out", type=Path)
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--step", type=int)
    group.add_argument("--minutes", type=float)
    ap.add_argument("--trained", action="store_true", help="publish the checkpoint's trained weights at the "
                    "step, not the moving average at the best validation")
    args = ap.parse_args()
    evs = events(args.run)
    last_eval = [e for e in evs if e["event"] == "eval"][-1]["step"]
    step = args.step if args.step is not None else step_at_minutes(evs, args.minutes)
    if step not in {e["step"] for e in evs if e["event"] == "eval"}:
        sys.exit(f"error: no validation at step {step} in {args.run}")
    if step == last_eval:  # the check: the run's own published weights
        weights, _ = published_at(args.run, evs, step)
        own = load_file(args.run / MODEL_FILE)
        same = own.keys() == weights.keys() and all(torch.equal(own[k], weights[k]) for k in own)
        print(f"stopping at the last validation ({step}) gives the run's own {MODEL_FILE}: {same}")
    if args.out is None:
        print(step)
        return
    if args.trained:
        weights, best = checkpoint_weights(args.run, step, MODEL_FILE), None
    else:
        weights, best = published_at(args.run, evs, step)
    args.out.mkdir(parents=True, exist_ok=False)
    for name in COPIED:
        shutil.copy2(args.run / name, args.out / name)
    kept = [e for e in evs if e.get("step", 0) <= step and e["event"] in ("train", "eval")]
    (args.out / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in kept))
    save_file(weights, args.out / MODEL_FILE)
    choose_like_train(args.run, args.out)
    elapsed = max(e["elapsed"] for e in kept if e["event"] == "train")
    what = "the trained weights" if best is None else f"the moving average of step {best}"
    print(f"{args.out}: stopped at step {step} ({elapsed / 60:.1f} min), published {what}")


if __name__ == "__main__":
    main()
