#!/usr/bin/env bash
# Fine-tuning, measured (issue 22): test2016 de->en BLEU of
#   (b) an imported OPUS-MT-layout model (bench/make_opus_mt.py: transformers-trained, the hub is out
#       of reach), the same model fine-tuned with `train --init-from` for FT updates, and a model trained
#       from scratch for the same FT updates with the same tokenizer (`prepare --tokenizer`);
#   (a) a run trained here for A updates, and the same run fine-tuned for A more.
# Budgets are in updates (the same recipe and shape, so the same minutes per update; the wall times
# are printed): unlike --max-time they do not depend on what else the machine runs.
# Usage: bash bench/finetune_imported.sh [WORK] (default work/ft); HF_STEPS, FT, A override budgets.
set -euo pipefail
W=${1:-work/ft}
BIN=${BIN:-.venv/bin}
DATA=${DATA:-../shared/data/multi30k}
HF_STEPS=${HF_STEPS:-600}
FT=${FT:-300}
A=${A:-300}
PARTS=${PARTS:-"a b"}  # which comparisons to run
CLI="$BIN/transformer-cli"
FINE="--schedule inverse_sqrt --lr 3e-4 --warmup 100"
# the imported model's shape (bench/make_opus_mt.py), for the run trained from scratch beside it
SHAPE=${SHAPE:-"--d-model 128 --heads 4 --d-ff 512 --layers 2"}
mkdir -p "$W"
timed() { local name=$1 start=$SECONDS; shift; "$@" </dev/null > "$W/$name.log" 2>&1; echo "$name: $((SECONDS - start)) s" | tee -a "$W/times.txt"; }

if [[ $PARTS == *b* ]]; then
[ -f "$W/opus-mt/model.safetensors" ] || timed make-opus-mt "$BIN/python" bench/make_opus_mt.py "$W/opus-mt" --steps "$HF_STEPS" $SHAPE --vocab 6000
[ -f "$W/imported/model.safetensors" ] || timed import "$CLI" import --from "$W/opus-mt" --out "$W/imported"
[ -f "$W/data-imported/prepare.json" ] || timed prepare-imported "$CLI" prepare --dataset "$DATA" --src de --tgt en \
  --tokenizer "$W/imported" --out "$W/data-imported"
[ -f "$W/finetuned/model.safetensors" ] || timed finetune-imported "$CLI" train --init-from "$W/imported" \
  --data "$W/data-imported" --out "$W/finetuned" --preset small --max-steps "$FT" $FINE
[ -f "$W/scratch/model.safetensors" ] || timed scratch "$CLI" train --data "$W/data-imported" --out "$W/scratch" \
  --preset small --max-steps "$FT" $SHAPE
fi
if [[ $PARTS == *a* ]]; then
[ -f "$W/m30k/prepare.json" ] || timed prepare "$CLI" prepare --dataset "$DATA" --src de --tgt en --out "$W/m30k"
[ -f "$W/ours-start/model.safetensors" ] || timed ours-start "$CLI" train --data "$W/m30k" --out "$W/ours-start" \
  --preset small --max-steps "$A"
[ -f "$W/ours-finetuned/model.safetensors" ] || timed ours-finetune "$CLI" train --init-from "$W/ours-start" \
  --data "$W/m30k" --out "$W/ours-finetuned" --preset small --max-steps "$A" $FINE
fi

gzip -dc "$DATA/test_2016_flickr.en.gz" > "$W/test.en"
for run in imported finetuned scratch ours-start ours-finetuned; do
  [ -f "$W/$run/model.safetensors" ] || continue
  gzip -dc "$DATA/test_2016_flickr.de.gz" | "$CLI" translate --model "$W/$run" > "$W/test.$run.en"
done
"$BIN/python" - "$W" <<'PY'
import sys
from pathlib import Path
from transformer_cli.scoring import score
w = Path(sys.argv[1])
refs = (w / "test.en").read_text(encoding="utf-8").splitlines()
print("| model | test2016 BLEU | chrF |\n|---|---|---|")
for run in ("imported", "finetuned", "scratch", "ours-start", "ours-finetuned"):
    if not (w / f"test.{run}.en").is_file():
        continue
    s = score((w / f"test.{run}.en").read_text(encoding="utf-8").splitlines(), refs)
    print(f"| {run} | {s.bleu:.2f} | {s.chrf:.2f} |")
print(f"BLEU signature: {s.bleu_signature}")
print((w / "times.txt").read_text())
PY
