#!/usr/bin/env bash
# Reproduces the bundled model fiji_bridge/models/semiblind_default.onnx (CPU, ~1.5 h on 2 cores).
# One torch thread: with other load on 2 cores, two OpenMP threads stall each other (measured 45 vs 170 samples/s).
# Stage 1 ran the 8000-step schedule of warmup.json and was stopped at step 750 (machine time ran short);
# stage 2 warm-starts from it with the 7000-step schedule of default.json.
set -euo pipefail
cd "$(dirname "$0")/.."
OMP_NUM_THREADS=1 python -m training train --config training/configs/warmup.json --out runs/warmup --max-steps 750
OMP_NUM_THREADS=1 python -m training train --config training/configs/default.json --out runs/default --init-from runs/warmup/checkpoint.pt
python -m training export --checkpoint runs/default/checkpoint.pt -o fiji_bridge/models/semiblind_default.onnx
python -m training evaluate --model fiji_bridge/models/semiblind_default.onnx --out runs/default/eval --store
