#!/usr/bin/env bash
# The main job on the shipped demo corpus: prepare -> train -> translate -> inspect-attention.
# Usage: scripts/demo.sh [BIN_DIR] [OUT_DIR]   (make demo runs it with .venv/bin and work/demo)
set -euo pipefail
BIN=${1:-.venv/bin}
OUT=${2:-work/demo}
CLI="$BIN/transformer-cli"

"$CLI" prepare --dataset demo --out "$OUT/data" --vocab-size 1000 --overwrite
rm -rf "$OUT/run"
"$CLI" train --data "$OUT/data" --out "$OUT/run" --preset tiny
printf '%s\n' "I am a student." "My friend drinks coffee at the cafe." \
  "The teacher went to the park yesterday." "We read a book at the library every day." |
  "$CLI" translate --model "$OUT/run"
"$CLI" inspect-attention --model "$OUT/run" "My friend drinks coffee at the cafe." --kind cross
"$CLI" inspect-attention --model "$OUT/run" "I am a student." --kind decoder --head all
