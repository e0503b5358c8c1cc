#!/bin/bash
# Choose the Morpho-MNIST defaults on validation images (benchmarks/morpho_front.py): the two mechanisms in two
# processes of one thread each, then the merge, which reuses every finished setting (rows in runs/morpho/front_rows.jsonl).
set -e
cd "$(dirname "$0")/../.."   # run from runs/morpho/ (see ../README.md)
source .venv/bin/activate
export OMP_NUM_THREADS=1
F="python benchmarks/morpho_front.py --model morphomnist --data-dir data/morphomnist --n 100 --rows runs/morpho/front_rows.jsonl"
$F --mechanisms conditional > runs/morpho/front_conditional.log 2>&1 &
$F --mechanisms paper > runs/morpho/front_paper.log 2>&1
wait
$F --mechanisms conditional,paper > runs/morpho/front.log 2>&1
echo "FRONT DONE"
