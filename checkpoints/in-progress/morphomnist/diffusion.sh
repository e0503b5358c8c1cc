#!/bin/bash
# Parent-conditioned Morpho-MNIST diffusion model (resumable).
set -e
cd "$(dirname "$0")/../.."   # run from runs/morpho/ (see ../README.md)
source .venv/bin/activate
export OMP_NUM_THREADS=${THREADS:-1}
# bf16 autocast only where the CPU has native bf16 (emulated, it runs many times slower than float32)
MP=${MP:-$(python -c "import torch; from diffscm.training import cpu_has_native_bf16 as f; print('bf16' if torch.cuda.is_available() or f() else 'no')")}
diffscm train diffusion --dataset morphomnist --data-dir data/morphomnist --conditional --cond-dropout 0.2 \
  --cond-dropout-all 0.1 --min-snr-gamma 5 --dropout 0.1 --lr-schedule cosine --warmup 300 --ema-decay auto \
  --init src/diffscm/pretrained/mnist/diffusion --mixed-precision $MP --out runs/morpho/diffusion \
  --steps 10000 --batch-size 128 --lr 5e-4 --seed 0 --save-every 200 --quiet --resume
echo "DIFFUSION DONE"
