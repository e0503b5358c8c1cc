#!/bin/bash
# Judges, flows, oracles, VAE/cVAE and predictors of the Morpho-MNIST SCM, one after another (resumable).
set -e
cd "$(dirname "$0")/../.."   # run from runs/morpho/ (see ../README.md)
source .venv/bin/activate
export OMP_NUM_THREADS=1
D="--dataset morphomnist --data-dir data/morphomnist --seed 0 --quiet --resume"
P=src/diffscm/pretrained/morphomnist
# A finished model (its config's step equals its --steps) is skipped: only its weights are kept, not its trainer state.
done_() { python -c "import json,sys; m=json.load(open(sys.argv[1]+'/config.json'))['meta']; sys.exit(m['step'] < m['train']['steps'])" "$1" 2>/dev/null; }
T() { local out; out=$(printf '%s\n' "$@" | grep -A1 -x -- --out | tail -1); done_ "$out" && echo "$out finished" || diffscm train "$@"; }
T judge $D --target digit --out runs/morpho/judge_digit --steps 6000 --batch-size 128 --lr 1e-3 --lr-schedule cosine --warmup 500
T flow $D --target thickness --out runs/morpho/flow_thickness --steps 1500 --batch-size 256 --lr 3e-3
T flow $D --target intensity --out runs/morpho/flow_intensity --steps 2500 --batch-size 256 --lr 3e-3
T oracle $D --target digit --init src/diffscm/pretrained/mnist/oracle --out runs/morpho/oracle_digit --steps 1500 --batch-size 128 --lr 1e-3 --lr-schedule cosine
T oracle $D --target thickness --init $P/oracles/thickness --out runs/morpho/oracle_thickness --steps 2000 --batch-size 128 --lr 1e-3 --lr-schedule cosine
T oracle $D --target intensity --init $P/oracles/intensity --out runs/morpho/oracle_intensity --steps 1500 --batch-size 128 --lr 1e-3 --lr-schedule cosine
for t in digit thickness intensity; do
  T predictor $D --target $t --diffusion src/diffscm/pretrained/mnist/diffusion --init $P/predictors/$t --out runs/morpho/predictor_$t --steps 1500 --batch-size 128 --lr 1e-3 --lr-schedule cosine --warmup 100
done
T vae $D --out runs/morpho/vae --steps 6000 --batch-size 128 --lr 1e-3 --lr-schedule cosine
T cvae $D --out runs/morpho/cvae --steps 8000 --batch-size 128 --lr 1e-3 --lr-schedule cosine
T judge $D --target thickness --out runs/morpho/judgeL_thickness --steps 20000 --batch-size 128 --lr 1e-3 --lr-schedule cosine --warmup 500
T judge $D --target intensity --out runs/morpho/judgeL_intensity --steps 30000 --batch-size 128 --lr 1e-3 --lr-schedule cosine --warmup 500
echo "SIDE DONE"
