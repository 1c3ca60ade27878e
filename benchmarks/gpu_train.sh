#!/usr/bin/env bash
# Issue 24's GPU figures in one prepared script (about 5-6 minutes on one H100; run it where `status` lends one):
#   1. one training epoch on the GPU, cellc's online trainer beside the plain torch.nn.LSTM loop and the GEMM floor
#      (JSB N=100 on the real data, the TIMIT proxy at N=100): reports/speed-train-gpu.md; compare with
#      reports/speed-train.md (this CPU);
#   2. trials per hour with one worker against --workers 4 sharing the GPU: reports/speed-workers-gpu.md;
#   3. the kernel benchmark against cuDNN (benchmarks/gpu.sh, capped at 150 s of timing): reports/speed-gpu.md.
# Exits 2 with one message where there is no CUDA device. Installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
"$PY" -m cellc.cli speed --train --device cuda --rows jsb:100,timit:100 --repeat 3 --out reports/speed-train-gpu.md
"$PY" -m cellc.speed.workers --device cuda --workers 4 --task jsb --profile quick --trials 8 \
    --out reports/speed-workers-gpu.md
exec "$PY" -m cellc.speed.gpu --max-seconds 150
