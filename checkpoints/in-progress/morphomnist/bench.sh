#!/bin/bash
# The counterfactual benchmark on the packed SCM (benchmarks/morphomnist_cfbench.py): the two Diff-SCM arms in two
# processes of one thread each (generation cached), then the full run, which reuses them and adds the cVAE and figure.
# The test images are the official ones: MORPHO_DIR is the folder of the community Morpho-MNIST files.
set -e
cd "$(dirname "$0")/../.."   # run from runs/morpho/ (see ../README.md)
source .venv/bin/activate
: "${MORPHO_DIR:?set MORPHO_DIR to the folder of the community Morpho-MNIST files}"
export OMP_NUM_THREADS=1
B="python benchmarks/morphomnist_cfbench.py --model morphomnist --data-dir $MORPHO_DIR --n 1000 --seeds 0,1,2 --comp-n 100 --n-joint 200 --rev-n 100"
$B --methods diffscm > runs/morpho/bench_diffscm.log 2>&1 &
$B --methods diffscm-paper > runs/morpho/bench_paper.log 2>&1
wait
OMP_NUM_THREADS=2 $B > runs/morpho/bench.log 2>&1
echo "BENCH DONE"
