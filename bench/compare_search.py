"""Do the new beam search's outputs equal an older revision's? Translates the test file with this
checkout and with REV (checked out into a temporary git worktree), same model, and prints how many
outputs are identical, the largest score difference, and each side's time.

    python bench/compare_search.py --model work/m30k-small --rev 87bb699 [--beam 5] [--precision fp32]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEST_DE = REPO.parent / "shared" / "data" / "multi30k" / "test_2016_flickr.de.gz"

CHILD = """
import gzip, json, sys, time, torch
torch.set_num_threads(2)
from transformer_cli import SearchOptions, load_run
from transformer_cli.runtime import reuse_freed_memory
reuse_freed_memory()
model, beam, precision, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
translator = load_run(model, precision=precision)
lines = [l.strip() for l in gzip.open(sys.argv[5], "rt", encoding="utf-8")]
options = SearchOptions(beam_size=beam)
translator.translate(lines[:16], options)
t0 = time.perf_counter()
results = translator.translate(lines, options)
seconds = time.perf_counter() - t0
json.dump({"seconds": seconds, "texts": [r.text for r in results], "scores": [r.score for r in results]}, open(out, "w"))
"""


def run(code: Path, args, out: Path) -> dict:
    """Translate with the packages in `code` (first on sys.path: the child runs there)."""
    subprocess.run([sys.executable, "-c", CHILD, str(args.model.resolve()), str(args.beam), args.precision,
                    str(out), str(TEST_DE)], cwd=code, check=True)
    return json.loads(out.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--rev", required=True, help="the older revision, e.g. 87bb699")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--precision", default="fp32")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old_tree = Path(tmp) / "old"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(old_tree), args.rev], check=True)
        try:
            old = run(old_tree, args, Path(tmp) / "old.json")
            new = run(REPO, args, Path(tmp) / "new.json")
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(old_tree)], check=True)
    same = sum(a == b for a, b in zip(old["texts"], new["texts"]))
    gap = max(abs(a - b) for a, b in zip(old["scores"], new["scores"]))
    print(f"beam {args.beam} {args.precision}, {len(new['texts'])} sentences of {TEST_DE.name}: "
          f"{same} identical outputs, largest score difference {gap:.2e}; "
          f"{args.rev} {old['seconds']:.2f} s, this checkout {new['seconds']:.2f} s")
    for a, b in zip(old["texts"], new["texts"]):
        if a != b:
            print(f"  {args.rev}: {a}\n  now: {b}")


if __name__ == "__main__":
    main()
