#!/usr/bin/env bash
# GPU benchmark (issue 6): correctness on the device against the eager backend, then every backend
# and torch.nn.LSTM / GRU (cuDNN) at (B, T, H) in {16, 64} x {100, 1000} x {256, 768} plus the
# study's small sizes (H 64, 128, 192), fp32 and bf16; writes reports/speed-gpu.md naming the card.
# Installs nothing; about 6 minutes on one H100 (--max-seconds caps the timing phase).
# Exits 2 with one message where there is no CUDA device.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
exec "$PY" -m cellc.speed.gpu "$@"
